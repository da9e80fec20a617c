//! The `game:<id>` channel: real-time game state, voice and bulk updates over binary payloads,
//! written with the public channel API only. Layouts in [`crate::protocol::binary`] and
//! `docs/PROTOCOL.md`.
//!
//! Client → server (all binary except where noted):
//! - `game_state`: validated completely ([`GameState::parse`]), then by the studio's
//!   [`GameHook::validate_game_state`]; a valid state goes to the other members as
//!   `game_update` — the same bytes, encoded into one frame for all subscribers — under the
//!   latest-value policy ([`Delivery::Latest`]: a subscriber that is behind has at most one
//!   `game_update` per topic and sender queued — or per topic, with `[game] latest_per =
//!   "topic"` — the newest). Reply ok `{}`, or error
//!   `{reason, message}` (`malformed`, `over_limit`, `not_finite`, `out_of_bounds`,
//!   `unknown_object_type`, `rejected`); the connection lives on.
//! - `audio_data`: one audio frame, relayed as `audio_stream` (see [`super::voice`]).
//! - `compressed_data`: one zstd frame holding `{"type": "bulk_update", "updates": [...]}`,
//!   decompressed within limits and validated, then given to [`GameHook::bulk_update`]
//!   (default: the same compressed bytes go to the other members as `bulk_update`). Failures get
//!   a push `error` `{reason, message}` and an error reply.
//!
//! Hooks run on the connection's shard inside the callback: they must not block.

use super::fast_path::{check_topic, error_reply, event, policy_key, sender_id, unknown_event};
use super::voice::AudioConfig;
use super::voice::{AudioRelay, AudioSettings};
use crate::core::{Channel, ChannelCtx, ConnId, Delivery, HandleIn, Payload, ReplyStatus};
#[cfg(feature = "bulk")]
use crate::protocol::binary::bulk;
use crate::protocol::binary::bulk::{BulkLimits, BulkUpdate};
use crate::protocol::binary::game_state::{GameState, GameStateLimits, ObjectTypes, WorldBounds};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::borrow::Cow;
use std::sync::Arc;

/// Topic prefix this channel is routed at.
pub const PREFIX: &str = "game:";

/// What every `game:` channel shares: limits and policies from `[game]`, `[audio]`, `[bulk]`.
#[derive(Debug, Clone)]
pub struct GameSettings {
    /// Limits and bounds every `game_state` is checked against before the hook sees it.
    pub limits: GameStateLimits,
    /// Latest-value key per topic and publishing connection (`[game] latest_per = "sender"`,
    /// the default) rather than per topic.
    pub latest_per_sender: bool,
    /// The `audio_data` relay's limits.
    pub audio: AudioSettings,
    /// Limits of `compressed_data` bulk updates.
    pub bulk: BulkLimits,
    /// zstd level for documents the server compresses (a hook that replaced the updates).
    pub bulk_level: i32,
}

impl GameSettings {
    /// The settings of the `[game]`, `[audio]` and `[bulk]` config sections.
    pub fn from_config(g: &GameConfig, audio: &AudioConfig, bulk: &BulkConfig) -> GameSettings {
        GameSettings {
            limits: GameStateLimits {
                bounds: WorldBounds {
                    min_x: g.world_min_x,
                    max_x: g.world_max_x,
                    min_y: g.world_min_y,
                    max_y: g.world_max_y,
                },
                max_positions: g.max_positions,
                max_objects: g.max_objects,
                max_object_data: g.max_object_data,
                object_types: ObjectTypes::new(&g.object_types),
            },
            latest_per_sender: g.latest_per == LatestPer::Sender,
            audio: AudioSettings::from_config(audio),
            bulk: BulkLimits {
                max_compressed: bulk.max_compressed_bytes,
                max_decompressed: bulk.max_decompressed_bytes,
                max_updates: bulk.max_updates,
            },
            bulk_level: bulk.level,
        }
    }
}

impl Default for GameSettings {
    fn default() -> Self {
        GameSettings::from_config(
            &GameConfig::default(),
            &AudioConfig::default(),
            &BulkConfig::default(),
        )
    }
}

/// Who sent what a hook is looking at.
#[derive(Debug, Clone, Copy)]
pub struct HookContext<'a> {
    /// The `game:<id>` topic.
    pub topic: &'a str,
    /// The socket's `user_id` assign (or `conn-<id>` without one).
    pub user_id: &'a str,
    /// The sending connection.
    pub conn_id: ConnId,
}

/// A hook's decision on a `game_state` that passed the built-in checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateVerdict {
    /// Relay the client's bytes as they are (no copy).
    Accept,
    /// Relay these bytes instead (they are validated again, like client input).
    Replace(Bytes),
    /// Refuse: error reply `{reason: "rejected", message}`.
    Reject(Cow<'static, str>),
}

/// A hook's decision on a valid bulk update.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkVerdict {
    /// Send the client's compressed frame to the other members as `bulk_update`.
    Broadcast,
    /// Send these updates instead (compressed once by the server, for all members).
    Replace(Vec<serde_json::Value>),
    /// The hook took care of it; nothing is sent.
    Handled,
    /// Refuse: push `error` and error reply `{reason: "rejected", message}`.
    Reject(Cow<'static, str>),
}

/// A game studio's own rules, run after the built-in validation on the connection's shard.
/// Both methods default to passing everything through.
pub trait GameHook: Send + Sync + 'static {
    /// Validates or transforms a game state.
    fn validate_game_state(&self, _ctx: &HookContext<'_>, _state: &GameState<'_>) -> StateVerdict {
        StateVerdict::Accept
    }

    /// Handles a decompressed, validated bulk update.
    fn bulk_update(&self, _ctx: &HookContext<'_>, _update: &BulkUpdate<'_>) -> BulkVerdict {
        BulkVerdict::Broadcast
    }
}

/// Passes everything through.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultHook;

impl GameHook for DefaultHook {}

/// One joined `game:` topic.
pub struct GameChannel {
    settings: Arc<GameSettings>,
    hook: Arc<dyn GameHook>,
    joined: Option<Joined>,
}

struct Joined {
    user_id: String,
    latest_key: u64,
    audio: AudioRelay,
}

impl GameChannel {
    /// A channel not joined yet, with [`DefaultHook`].
    pub fn new(settings: Arc<GameSettings>) -> GameChannel {
        GameChannel {
            settings,
            hook: Arc::new(DefaultHook),
            joined: None,
        }
    }

    /// Runs `hook` on this channel's game states and bulk updates.
    pub fn with_hook(mut self, hook: Arc<dyn GameHook>) -> GameChannel {
        self.hook = hook;
        self
    }

    fn game_state(&mut self, ctx: &mut ChannelCtx<'_>, payload: &Payload) -> HandleIn {
        let Some(j) = &self.joined else {
            return error_reply("not_joined", "join first");
        };
        let Payload::Binary(bytes) = payload else {
            return error_reply("malformed", "game_state is a binary payload");
        };
        let state = match GameState::parse(bytes, &self.settings.limits) {
            Ok(state) => state,
            Err(e) => return error_reply(e.code(), e),
        };
        let hook_ctx = HookContext {
            topic: ctx.topic(),
            user_id: &j.user_id,
            conn_id: ctx.conn_id(),
        };
        let relayed = match self.hook.validate_game_state(&hook_ctx, &state) {
            StateVerdict::Accept => payload.clone(),
            StateVerdict::Replace(bytes) => {
                if let Err(e) = GameState::parse(&bytes, &self.settings.limits) {
                    tracing::error!(topic = %ctx.topic(), error = %e, "game hook produced an invalid state");
                    return error_reply("internal_error", "the state could not be processed");
                }
                Payload::Binary(bytes)
            }
            StateVerdict::Reject(why) => return error_reply("rejected", why),
        };
        ctx.broadcast_from_with(event::GAME_UPDATE, &relayed, Delivery::Latest(j.latest_key));
        HandleIn::ok(Payload::empty())
    }

    /// Without the `bulk` feature there is no zstd: the push is refused with a clear reason.
    #[cfg(not(feature = "bulk"))]
    fn compressed_data(&mut self, ctx: &mut ChannelCtx<'_>, _payload: &Payload) -> HandleIn {
        bulk_error(
            ctx,
            "unsupported",
            "this server is built without bulk updates (Cargo feature `bulk`)",
        )
    }

    #[cfg(feature = "bulk")]
    fn compressed_data(&mut self, ctx: &mut ChannelCtx<'_>, payload: &Payload) -> HandleIn {
        let Some(j) = &self.joined else {
            return error_reply("not_joined", "join first");
        };
        let Payload::Binary(frame) = payload else {
            return bulk_error(
                ctx,
                "invalid_compression",
                "compressed_data is a binary payload",
            );
        };
        let doc = match bulk::decompress_bounded(frame, &self.settings.bulk) {
            Ok(doc) => doc,
            Err(e) => return bulk_error(ctx, e.code(), e),
        };
        let update = match bulk::parse_bulk_update(&doc, self.settings.bulk.max_updates) {
            Ok(update) => update,
            Err(e) => return bulk_error(ctx, e.code(), e),
        };
        let hook_ctx = HookContext {
            topic: ctx.topic(),
            user_id: &j.user_id,
            conn_id: ctx.conn_id(),
        };
        match self.hook.bulk_update(&hook_ctx, &update) {
            BulkVerdict::Broadcast => ctx.broadcast_from(event::BULK_UPDATE, payload),
            BulkVerdict::Replace(updates) => {
                match bulk::encode_compressed(&updates, self.settings.bulk_level) {
                    Ok(frame) => {
                        ctx.broadcast_from(event::BULK_UPDATE, &Payload::Binary(frame.into()))
                    }
                    Err(e) => {
                        tracing::error!(topic = %ctx.topic(), error = %e, "bulk update not compressed");
                        return bulk_error(ctx, e.code(), e);
                    }
                }
            }
            BulkVerdict::Handled => {}
            BulkVerdict::Reject(why) => return bulk_error(ctx, "rejected", why),
        }
        HandleIn::ok(Payload::empty())
    }
}

/// A refused `compressed_data`: push `error` `{reason, message}`, then the error reply.
fn bulk_error(ctx: &mut ChannelCtx<'_>, reason: &str, message: impl std::fmt::Display) -> HandleIn {
    let payload = Payload::json(&json!({ "reason": reason, "message": message.to_string() }));
    if let Err(e) = ctx.push(event::ERROR, &payload) {
        tracing::warn!(error = %e, "error push not encoded");
    }
    HandleIn::Reply(ReplyStatus::Error, payload)
}

impl Channel for GameChannel {
    type Info = ();

    fn join(&mut self, ctx: &mut ChannelCtx<'_>, _payload: Payload) -> Result<Payload, Payload> {
        check_topic(ctx, PREFIX)?;
        let user_id = sender_id(ctx)?;
        let conn = ctx.conn_id().to_le_bytes();
        let latest_key = if self.settings.latest_per_sender {
            policy_key(&[b"game_update", ctx.topic().as_bytes(), &conn])
        } else {
            policy_key(&[b"game_update", ctx.topic().as_bytes()])
        };
        self.joined = Some(Joined {
            audio: AudioRelay::new(ctx, &user_id),
            user_id,
            latest_key,
        });
        Ok(Payload::empty())
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: Payload) -> HandleIn {
        match event {
            event::GAME_STATE => self.game_state(ctx, &payload),
            event::AUDIO_DATA => match self.joined.as_mut() {
                Some(j) => j.audio.relay(ctx, &self.settings.audio, &payload),
                None => error_reply("not_joined", "join first"),
            },
            event::COMPRESSED_DATA => self.compressed_data(ctx, &payload),
            _ => unknown_event(),
        }
    }
}

// --- Configuration (this feature's section of the config file) ---------------------

/// `game:<id>` channels: what a `game_state` may contain, and how a slow subscriber is served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GameConfig {
    /// The world: coordinates of positions and objects must lie within these bounds.
    pub world_min_x: f32,
    /// Right edge of the world.
    pub world_max_x: f32,
    /// Bottom edge of the world.
    pub world_min_y: f32,
    /// Top edge of the world.
    pub world_max_y: f32,
    /// Position records per `game_state` at most.
    pub max_positions: u32,
    /// Object records per `game_state` at most.
    pub max_objects: u32,
    /// Largest `data` of one object, in bytes.
    pub max_object_data: u32,
    /// The object types a state may name; anything else is refused.
    pub object_types: Vec<String>,
    /// Latest-value-wins key for subscribers that are behind: `sender` (at most one queued
    /// `game_update` per topic and publishing connection: with one publisher, such as an
    /// authoritative simulation, that is one per topic; with every player publishing its own
    /// state, nobody's update supersedes another player's) or `topic` (at most one per topic,
    /// whoever sent it: updates of different members published at the same instant supersede
    /// each other even for subscribers that keep up).
    pub latest_per: LatestPer,
}

impl Default for GameConfig {
    fn default() -> Self {
        GameConfig {
            world_min_x: -10_000.0,
            world_max_x: 10_000.0,
            world_min_y: -10_000.0,
            world_max_y: 10_000.0,
            max_positions: 1024,
            max_objects: 1024,
            max_object_data: 1024,
            object_types: ["projectile", "pickup", "effect", "npc", "vehicle", "item"]
                .map(String::from)
                .to_vec(),
            latest_per: LatestPer::Sender,
        }
    }
}

impl GameConfig {
    fn world_bounds_valid(&self) -> bool {
        let all = [
            self.world_min_x,
            self.world_max_x,
            self.world_min_y,
            self.world_max_y,
        ];
        all.iter().all(|v| v.is_finite())
            && self.world_min_x < self.world_max_x
            && self.world_min_y < self.world_max_y
    }

    fn object_types_valid(&self) -> bool {
        let mut seen = std::collections::HashSet::new();
        self.object_types.len() <= 1024
            && self
                .object_types
                .iter()
                .all(|t| (1..=255).contains(&t.len()) && seen.insert(t.as_str()))
    }

    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (
                self.world_bounds_valid(),
                "game: world bounds must be finite with world_min_x < world_max_x and world_min_y < world_max_y",
            ),
            (self.max_positions > 0, "game.max_positions must be > 0"),
            (
                self.object_types_valid(),
                "game.object_types must be distinct names of 1 to 255 bytes (at most 1024)",
            ),
        ];
        crate::ops::checks::failed(&checks)
    }
}

/// What a latest-value-wins `game_update` replaces in a subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatestPer {
    /// The queued update of the same topic and publishing connection.
    Sender,
    /// The queued update of the same topic, whoever sent it.
    Topic,
}

/// `compressed_data` (zstd) bulk updates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    /// Largest compressed payload accepted (the WebSocket message limit applies first).
    pub max_compressed_bytes: usize,
    /// Largest decompressed document; decompression never allocates past it.
    pub max_decompressed_bytes: usize,
    /// Elements of `updates` at most.
    pub max_updates: usize,
    /// zstd level for documents the server compresses itself (a hook that changed the updates).
    pub level: i32,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            max_compressed_bytes: 1 << 20,
            max_decompressed_bytes: 16 << 20,
            max_updates: 100_000,
            level: 3,
        }
    }
}

impl BulkConfig {
    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (
                self.max_compressed_bytes > 0,
                "bulk.max_compressed_bytes must be > 0",
            ),
            (
                (1..=1 << 30).contains(&self.max_decompressed_bytes),
                "bulk.max_decompressed_bytes must be within 1..=1073741824",
            ),
            (self.max_updates > 0, "bulk.max_updates must be > 0"),
            (
                (1..=19).contains(&self.level),
                "bulk.level must be within 1..=19",
            ),
        ];
        crate::ops::checks::failed(&checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_keys_separate_parts() {
        assert_ne!(policy_key(&[b"ab", b"c"]), policy_key(&[b"a", b"bc"]));
        assert_eq!(policy_key(&[b"game:1"]), policy_key(&[b"game:1"]));
        assert_ne!(policy_key(&[b"game:1"]), policy_key(&[b"game:2"]));
    }

    #[test]
    fn settings_follow_the_config() {
        let game = GameConfig {
            object_types: vec!["tank".into()],
            latest_per: LatestPer::Topic,
            ..GameConfig::default()
        };
        let audio = AudioConfig {
            budget_ms: 100,
            ..AudioConfig::default()
        };
        let s = GameSettings::from_config(&game, &audio, &BulkConfig::default());
        assert!(s.limits.object_types.contains(b"tank"));
        assert!(!s.limits.object_types.contains(b"projectile"));
        assert!(!s.latest_per_sender);
        assert!(GameSettings::default().latest_per_sender);
        assert_eq!(s.audio.budget_frames, 5);
        assert_eq!(s.bulk.max_decompressed, 16 << 20);
    }
}
