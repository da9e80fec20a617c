//! The built-in features, written against the public channel API only (as a studio's own
//! channels would be):
//!
//! - [`auth`]: JWT auth (HS256, RS256, ES256) at connect ([`TokenAuth`]) and per join
//!   ([`auth::authorize_join`]).
//! - [`room`]: `room:<id>` — chat with persisted history, typing indicators, presence.
//! - [`collaboration`]: `collaboration:<id>` — presence with cursors and selections.
//! - [`document`]: `document:<id>` — collaborative text (operational transform), persisted.
//! - [`game`]: `game:<id>` — binary game state (latest value wins), audio, zstd bulk updates,
//!   with a studio hook ([`GameHook`]); [`voice`]: `voice:<id>`, audio only.
//! - [`uploads`]: `uploads:<user id>` — resumable chunked uploads to the data directory.
//!
//! Per-topic authority (presence, message order, warm history) lives on the topic's owner shard
//! ([`ChannelCtx::run_on_owner`](crate::core::ChannelCtx::run_on_owner)); the storage thread
//! ([`crate::storage`]) is reached through futures, so shards never block on disk.
//!
//! Each family sits behind a Cargo feature (all on by default): `rooms` (room, collaboration;
//! SQLite), `documents` (ropey, SQLite), `bulk` (zstd bulk updates on `game:*`), `uploads`.
//! Auth, `game:*` state and `voice:*` are always there.

pub mod auth;
pub mod clock;
#[cfg(feature = "rooms")]
pub mod collaboration;
#[cfg(feature = "documents")]
pub mod document;
pub mod fast_path;
pub mod game;
#[cfg(feature = "rooms")]
pub mod room;
#[cfg(feature = "uploads")]
pub mod uploads;
pub mod voice;

pub use auth::{Authenticator, Claims, Guarded, Identity, TokenAuth, User};
#[cfg(feature = "rooms")]
pub use collaboration::CollaborationChannel;
pub use game::{GameChannel, GameHook, GameSettings};
#[cfg(feature = "rooms")]
pub use room::RoomChannel;
#[cfg(feature = "uploads")]
pub use uploads::{UploadChannel, UploadServices};
pub use voice::VoiceChannel;

use crate::core::Payload;
#[cfg(feature = "rooms")]
use crate::core::{ChannelCtx, TerminateReason};
#[cfg(feature = "rooms")]
use crate::storage::Storage;
#[cfg(feature = "rooms")]
use room::RoomsConfig;
use serde_json::{json, Value};
#[cfg(feature = "rooms")]
use std::sync::Arc;

/// Errors building the default application.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The token secret or keys.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The documents database.
    #[cfg(feature = "documents")]
    #[error("cannot open the documents database: {0}")]
    Documents(#[from] document::StoreError),
    /// The uploads directory.
    #[cfg(feature = "uploads")]
    #[error(transparent)]
    Uploads(#[from] uploads::UploadSetupError),
}

/// What the built-in channels share: the token checker, the storage handle, the limits.
#[cfg(feature = "rooms")]
#[derive(Debug)]
pub struct Services {
    /// Token checks for joins.
    pub auth: Arc<Authenticator>,
    /// The rooms store.
    pub storage: Storage,
    /// `[rooms]`.
    pub rooms: RoomsConfig,
}

// --- Helpers shared by the channels --------------------------------------------------------

/// The JSON object of a push (`{}` for anything that is not an object).
#[cfg_attr(
    not(any(feature = "rooms", feature = "documents", feature = "uploads")),
    allow(dead_code)
)]
pub(crate) fn params(payload: &Payload) -> Result<Value, Payload> {
    match payload.parse::<Value>() {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Ok(json!({})),
        Err(_) => Err(reason("invalid_payload")),
    }
}

/// `{"reason": reason}`.
pub(crate) fn reason(reason: &str) -> Payload {
    Payload::json(&json!({ "reason": reason }))
}

/// `{"errors": {field: [message]}}`, the shape of a changeset error.
#[cfg_attr(not(feature = "rooms"), allow(dead_code))]
pub(crate) fn field_error(field: &str, message: &str) -> Payload {
    Payload::json(&json!({ "errors": { field: [message] } }))
}

/// The part of `topic` after `prefix`, if it is a usable id (1-128 bytes).
pub(crate) fn topic_id<'t>(topic: &'t str, prefix: &str) -> Option<&'t str> {
    topic
        .strip_prefix(prefix)
        .filter(|id| !id.is_empty() && id.len() <= 128)
}

#[cfg(feature = "rooms")]
/// A presence status from a join or a push: 1-32 bytes.
pub(crate) fn status_param(params: &Value) -> Option<String> {
    params
        .get("status")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 32)
        .map(str::to_string)
}

#[cfg(feature = "rooms")]
/// How a channel's end is recorded in the user's session.
pub(crate) fn disconnect_reason(reason: TerminateReason) -> &'static str {
    match reason {
        TerminateReason::Leave => "leave",
        TerminateReason::Normal => "closed",
        TerminateReason::Duplicate => "rejoined",
        TerminateReason::Disconnect => "disconnect",
        TerminateReason::Crashed => "crashed",
    }
}

#[cfg(feature = "rooms")]
/// Records session activity off the shard; failures are only logged (best effort, the user's
/// action does not depend on it). The answer comes back to `handle_info` as [`SessionWrite`].
pub(crate) fn touch_session<I: From<SessionWrite> + Send + 'static>(
    ctx: &mut ChannelCtx<'_, I>,
    services: &Services,
    user: &User,
) {
    let fut = services
        .storage
        .touch_session(&user.id, &user.name, ctx.now().unix_ms);
    ctx.spawn(async move { SessionWrite(fut.await.err().map(|e| e.to_string())).into() });
}

#[cfg(feature = "rooms")]
pub(crate) fn end_session<I: From<SessionWrite> + Send + 'static>(
    ctx: &mut ChannelCtx<'_, I>,
    services: &Services,
    user: &User,
    why: TerminateReason,
) {
    let fut = services
        .storage
        .end_session(&user.id, disconnect_reason(why), ctx.now().unix_ms);
    ctx.spawn(async move { SessionWrite(fut.await.err().map(|e| e.to_string())).into() });
}

#[cfg(feature = "rooms")]
/// The outcome of a session write (an error message, if any).
#[derive(Debug)]
pub struct SessionWrite(pub Option<String>);

#[cfg(feature = "rooms")]
impl SessionWrite {
    pub(crate) fn log(&self, topic: &str) {
        if let Some(e) = &self.0 {
            tracing::warn!(topic, error = %e, "session state not recorded");
        }
    }
}
