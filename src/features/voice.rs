//! Audio relay, shared by `game:<id>` and the audio-only `voice:<id>` channel.
//!
//! `audio_data` (binary: one encoded audio frame, e.g. 20 ms of Opus) goes to the other members
//! as `audio_stream`: `{u16 user_id_len, user_id, u64 server_timestamp_ms, u32 seq}` followed by
//! the audio bytes ([`crate::protocol::binary::audio`]). `seq` counts the sender's frames on
//! the topic from 0.
//!
//! Delivery is bounded and lossy by design ([`Delivery::Budget`]): a subscriber that is behind
//! keeps at most `[audio] budget_ms / frame_ms` frames per sender queued (200 ms / 20 ms = 10 by
//! default); a newer frame drops the oldest, counted in the `frames_dropped_by_policy` metric and
//! visible to the client as a gap in `seq`. Other subscribers are not affected.

use super::fast_path::{check_topic, error_reply, event, policy_key, sender_id, unknown_event};
use crate::core::{Channel, ChannelCtx, Delivery, HandleIn, Payload};
use crate::protocol::binary::audio::{self, AudioStreamHeader};
use serde::{Deserialize, Serialize};

/// Topic prefix of the audio-only channel.
pub const PREFIX: &str = "voice:";

/// Audio relay limits, from the `[audio]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSettings {
    /// Frames per sender a subscriber that is behind may have queued.
    pub budget_frames: u16,
    /// Largest `audio_data` frame accepted, in bytes.
    pub max_frame_bytes: usize,
}

impl AudioSettings {
    /// The `[audio]` section's settings (the budget saturates at `u16::MAX` frames).
    pub fn from_config(config: &AudioConfig) -> AudioSettings {
        AudioSettings {
            budget_frames: u16::try_from(config.budget_frames()).unwrap_or(u16::MAX),
            max_frame_bytes: config.max_frame_bytes,
        }
    }
}

impl Default for AudioSettings {
    fn default() -> Self {
        AudioSettings::from_config(&AudioConfig::default())
    }
}

/// One sender's audio on one topic: its identity, budget key and frame counter.
pub struct AudioRelay {
    user_id: String,
    budget_key: u64,
    next_seq: u32,
}

impl AudioRelay {
    /// The relay of the connection behind `ctx` on its topic, sending as `user_id`.
    pub fn new(ctx: &ChannelCtx<'_>, user_id: &str) -> AudioRelay {
        AudioRelay {
            user_id: user_id.to_string(),
            budget_key: policy_key(&[
                b"audio_stream",
                ctx.topic().as_bytes(),
                &ctx.conn_id().to_le_bytes(),
            ]),
            next_seq: 0,
        }
    }

    /// Checks one `audio_data` frame and relays it as `audio_stream`.
    pub fn relay(
        &mut self,
        ctx: &mut ChannelCtx<'_>,
        settings: &AudioSettings,
        payload: &Payload,
    ) -> HandleIn {
        let Payload::Binary(frame) = payload else {
            return error_reply("malformed", "audio_data is a binary payload");
        };
        if let Err(e) = audio::check_audio_data(frame, settings.max_frame_bytes) {
            return error_reply(e.code(), e);
        }
        let header = AudioStreamHeader {
            user_id: &self.user_id,
            server_timestamp_ms: ctx.now().unix_ms.max(0) as u64,
            seq: self.next_seq,
        };
        let msg = match audio::encode(&header, frame) {
            Ok(msg) => msg,
            Err(e) => return error_reply(e.code(), e),
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        ctx.broadcast_from_with(
            event::AUDIO_STREAM,
            &Payload::Binary(msg),
            Delivery::Budget {
                key: self.budget_key,
                max: settings.budget_frames,
            },
        );
        HandleIn::ok(Payload::empty())
    }
}

/// One joined `voice:` topic: audio only.
pub struct VoiceChannel {
    settings: AudioSettings,
    relay: Option<AudioRelay>,
}

impl VoiceChannel {
    /// A channel not joined yet.
    pub fn new(settings: AudioSettings) -> VoiceChannel {
        VoiceChannel {
            settings,
            relay: None,
        }
    }
}

impl Channel for VoiceChannel {
    type Info = ();

    fn join(&mut self, ctx: &mut ChannelCtx<'_>, _payload: Payload) -> Result<Payload, Payload> {
        check_topic(ctx, PREFIX)?;
        let user_id = sender_id(ctx)?;
        self.relay = Some(AudioRelay::new(ctx, &user_id));
        Ok(Payload::empty())
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: Payload) -> HandleIn {
        match (event, self.relay.as_mut()) {
            (event::AUDIO_DATA, Some(relay)) => relay.relay(ctx, &self.settings, &payload),
            (event::AUDIO_DATA, None) => error_reply("not_joined", "join first"),
            _ => unknown_event(),
        }
    }
}

// --- Configuration (this feature's section of the config file) ---------------------

/// Audio relayed on `game:` and `voice:` topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Audio a subscriber that is behind keeps queued per sender; older frames are dropped.
    pub budget_ms: u32,
    /// Duration of one `audio_data` frame (the budget in frames is `budget_ms / frame_ms`).
    pub frame_ms: u32,
    /// Largest `audio_data` payload, in bytes.
    pub max_frame_bytes: usize,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            budget_ms: 200,
            frame_ms: 20,
            max_frame_bytes: 4096,
        }
    }
}

impl AudioConfig {
    /// Frames per sender a subscriber may have queued (at least 1).
    pub fn budget_frames(&self) -> u32 {
        (self.budget_ms / self.frame_ms.max(1)).max(1)
    }

    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (self.frame_ms > 0, "audio.frame_ms must be > 0"),
            (
                self.budget_ms >= self.frame_ms && self.budget_frames() <= 1000,
                "audio.budget_ms must be at least frame_ms and at most 1000 frames",
            ),
            (
                (1..=1 << 20).contains(&self.max_frame_bytes),
                "audio.max_frame_bytes must be within 1..=1048576",
            ),
        ];
        crate::ops::checks::failed(&checks)
    }
}
