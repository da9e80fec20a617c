//! What the binary fast-path channels (`game:*`, `voice:*`, `uploads:*`) share: event names,
//! error replies, delivery-policy keys and the sender's identity.

use crate::core::{ChannelCtx, HandleIn, Payload};
use serde_json::json;

/// Event names.
pub mod event {
    /// Client → server: a binary game state.
    pub const GAME_STATE: &str = "game_state";
    /// Server → members: a relayed game state.
    pub const GAME_UPDATE: &str = "game_update";
    /// Client → server: one encoded audio frame.
    pub const AUDIO_DATA: &str = "audio_data";
    /// Server → members: an audio frame behind its sender header.
    pub const AUDIO_STREAM: &str = "audio_stream";
    /// Client → server: one zstd frame holding a bulk update.
    pub const COMPRESSED_DATA: &str = "compressed_data";
    /// Server → members: a compressed bulk update, relayed or replaced by a hook.
    pub const BULK_UPDATE: &str = "bulk_update";
    /// Server → client push: a failure `{reason, message}`.
    pub const ERROR: &str = "error";
}

/// FNV-1a over `parts`, the delivery-policy keys of topics and senders.
pub(crate) fn policy_key(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An error reply `{reason, message}`.
pub(crate) fn error_reply(reason: &str, message: impl std::fmt::Display) -> HandleIn {
    HandleIn::error(Payload::json(
        &json!({ "reason": reason, "message": message.to_string() }),
    ))
}

/// `{reason: "unknown_event"}`.
pub(crate) fn unknown_event() -> HandleIn {
    HandleIn::error(super::reason("unknown_event"))
}

/// The socket's user id (its [`Identity`](super::Identity)), or `conn-<id>` for sockets
/// without one.
pub(crate) fn sender_id<I: Send + 'static>(ctx: &ChannelCtx<'_, I>) -> Result<String, Payload> {
    match ctx.assigns::<super::Identity>().map(|i| i.user.id.as_str()) {
        Some(id) if id.len() <= 1024 => Ok(id.to_string()),
        Some(_) => Err(super::reason("invalid_user")),
        None => Ok(format!("conn-{}", ctx.conn_id())),
    }
}

/// The topic's id part, 1 to 128 bytes.
pub(crate) fn check_topic<I: Send + 'static>(
    ctx: &ChannelCtx<'_, I>,
    prefix: &str,
) -> Result<(), Payload> {
    super::topic_id(ctx.topic(), prefix)
        .map(|_| ())
        .ok_or_else(|| super::reason("invalid_topic"))
}
