//! The `uploads:<user id>` channel: resumable chunked uploads, written to disk with glommio's
//! io_uring file I/O. Written with the public channel API only.
//!
//! Client → server:
//! - join `uploads:<user id>` (the socket's own, authenticated user; guests are refused) →
//!   ok `{user_id, chunk_size, min_chunk_size, max_chunk_size, max_file_size}`.
//! - `upload_start` (JSON) `{filename, size, sha256, chunk_size?}` → ok `{upload_id, chunk_size,
//!   total_chunks, missing: [chunk indexes]}`. With `upload_id` it resumes that upload (same
//!   `size` and `sha256`) and answers the chunks still missing, or the completion below if it is
//!   done.
//! - `upload_chunk` (binary) `{16-byte upload_id, u32 chunk_index, u32 total_chunks}` + bytes, in
//!   any order, repeated at will → written at `chunk_index * chunk_size` and answered
//!   `{upload_complete: false, upload_id, chunk_index, chunks_received}`. The chunk that
//!   completes the set is answered once the file is verified (size and sha256), moved
//!   atomically into `<uploads dir>/files/<file_id>` and described in `<file_id>.json`:
//!   `{upload_complete: true, upload_id, file_id, size, sha256, chunks_received}`. A checksum
//!   mismatch answers `{reason: "checksum_mismatch", ...}`: the partial file and the upload are
//!   kept, all its chunks are missing again, and sending them again retries.
//!
//! Errors (`{reason, message}`): `invalid_payload`, `invalid_filename`, `invalid_size`,
//! `invalid_sha256`, `invalid_upload_id`, `invalid_chunk_size`, `file_too_large`,
//! `too_many_chunks`, `too_many_uploads`, `quota_exceeded`, `unknown_upload`,
//! `upload_mismatch`, `invalid_chunk`, `total_chunks_mismatch`, `bad_chunk_length`,
//! `too_many_pending_chunks` (wait for answers), `checksum_mismatch`, `storage_error`.
//!
//! **Where the state lives.** Every upload of a user is kept on the owner shard of the topic
//! `uploads:<user id>` (see `docs/ARCHITECTURE.md`), which also performs its file I/O, so a client
//! whose connection dropped resumes from a new connection on any shard, and one user's uploads are
//! counted in one place. The state is in memory: a restarted server deletes the partial files it
//! finds (nothing records which of their chunks were written) and keeps completed files.
//! File names from clients are metadata only; paths are made of upload ids.

mod owner;

use super::auth::{authorize_channel_join, Authenticator, Identity};
use super::fast_path::error_reply;
use super::{params, reason, topic_id};
use crate::core::{Channel, ChannelCtx, HandleIn, HandleInfo, Payload, ReplyRef, ReplyStatus};
use crate::protocol::binary::upload::{self, ChunkPlan, UploadStart};
use serde_json::json;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Topic prefix this channel is routed at.
pub const PREFIX: &str = "uploads:";

/// Room left in a WebSocket message for the Phoenix binary header and the chunk header.
const MESSAGE_OVERHEAD: usize = 5 + 4 * 255 + upload::CHUNK_HEADER_LEN;

/// [`UploadServices::open`] could not prepare the uploads directories.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the uploads directory {}: {source}", path.display())]
pub struct UploadSetupError {
    /// The directory or file that could not be created, read or removed.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// What every uploads channel shares: limits, directories and the disk quota.
#[derive(Debug)]
pub struct UploadServices {
    config: UploadsConfig,
    /// `max_chunk_size`, capped so a chunk fits `websocket.max_message_size`.
    max_chunk_size: u32,
    partial_dir: PathBuf,
    files_dir: PathBuf,
    /// Bytes of completed files plus the chunks unfinished uploads have been sent.
    used: AtomicU64,
}

impl UploadServices {
    /// Prepares `<uploads dir>/partial` and `<uploads dir>/files` (at startup, before the
    /// shards run): partial files of a previous run are deleted, completed files count towards
    /// the quota.
    /// `max_message_size` (`[websocket]`) caps the chunk size a client is offered.
    pub fn open(
        config: &UploadsConfig,
        data_dir: &Path,
        max_message_size: usize,
    ) -> Result<Arc<UploadServices>, UploadSetupError> {
        let root = config.path(data_dir);
        let partial_dir = root.join("partial");
        let files_dir = root.join("files");
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| UploadSetupError { path, source }
        };
        for dir in [&partial_dir, &files_dir] {
            std::fs::create_dir_all(dir).map_err(err(dir))?;
        }
        let mut stale = 0;
        for entry in std::fs::read_dir(&partial_dir).map_err(err(&partial_dir))? {
            let entry = entry.map_err(err(&partial_dir))?;
            std::fs::remove_file(entry.path()).map_err(err(&entry.path()))?;
            stale += 1;
        }
        if stale > 0 {
            tracing::info!(
                count = stale,
                "deleted unfinished uploads of a previous run"
            );
        }
        let mut used = 0u64;
        for entry in std::fs::read_dir(&files_dir).map_err(err(&files_dir))? {
            let entry = entry.map_err(err(&files_dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(err(&entry.path()))?;
                continue;
            }
            used += entry.metadata().map_err(err(&entry.path()))?.len();
        }
        let ws_room = max_message_size.saturating_sub(MESSAGE_OVERHEAD);
        let max_chunk_size = config
            .max_chunk_size
            .min(u32::try_from(ws_room).unwrap_or(u32::MAX));
        if max_chunk_size < config.max_chunk_size {
            tracing::warn!(
                configured = config.max_chunk_size,
                effective = max_chunk_size,
                "uploads.max_chunk_size capped to fit websocket.max_message_size"
            );
        }
        Ok(Arc::new(UploadServices {
            config: config.clone(),
            max_chunk_size,
            partial_dir,
            files_dir,
            used: AtomicU64::new(used),
        }))
    }

    /// Bytes on disk (completed files) plus the chunks unfinished uploads have been sent.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Where completed files are.
    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// Whether `bytes` more would fit the quota now (nothing is taken).
    fn would_fit(&self, bytes: u64) -> bool {
        self.used_bytes()
            .checked_add(bytes)
            .is_some_and(|total| total <= self.config.quota_bytes)
    }

    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.config.quota_bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// The chunk plan an `upload_start` asks for, within the limits.
    fn plan(&self, start: &UploadStart) -> Result<ChunkPlan, (&'static str, String)> {
        let c = &self.config;
        if start.size > c.max_file_size {
            return Err((
                "file_too_large",
                format!("files are limited to {} bytes", c.max_file_size),
            ));
        }
        let chunk = start
            .chunk_size
            .unwrap_or(c.chunk_size.min(self.max_chunk_size));
        if chunk < c.min_chunk_size || chunk > self.max_chunk_size {
            return Err((
                "invalid_chunk_size",
                format!(
                    "chunk_size must be within {}..={}",
                    c.min_chunk_size, self.max_chunk_size
                ),
            ));
        }
        let plan = ChunkPlan::new(start.size, chunk)
            .filter(|p| p.total_chunks() <= c.max_chunks)
            .ok_or_else(|| {
                (
                    "too_many_chunks",
                    format!("at most {} chunks: use a larger chunk_size", c.max_chunks),
                )
            })?;
        Ok(plan)
    }
}

/// An owner's answer to one push, for its deferred reply: the `uploads:*` channel's message.
pub struct Answer {
    pub(crate) to: ReplyRef,
    pub(crate) status: ReplyStatus,
    pub(crate) payload: Payload,
    /// Answers an `upload_chunk` (one fewer pending).
    pub(crate) chunk: bool,
}

/// One joined `uploads:` topic.
pub struct UploadChannel {
    services: Arc<UploadServices>,
    auth: Option<Arc<Authenticator>>,
    joined: Option<Joined>,
}

struct Joined {
    user: String,
    /// Chunks sent to the owner and not answered yet.
    pending: usize,
}

impl UploadChannel {
    /// Identity from `auth` (socket token or join token); without it, from the socket's
    /// `user_id` assign.
    pub fn new(services: Arc<UploadServices>, auth: Option<Arc<Authenticator>>) -> UploadChannel {
        UploadChannel {
            services,
            auth,
            joined: None,
        }
    }

    fn start(&mut self, ctx: &mut ChannelCtx<'_, Answer>, payload: &Payload) -> HandleIn {
        let Some(j) = &self.joined else {
            return error_reply("not_joined", "join first");
        };
        let Payload::Json(json) = payload else {
            return error_reply("invalid_payload", "upload_start is a JSON payload");
        };
        let start = match upload::parse_start(json) {
            Ok(start) => start,
            Err(e) => return error_reply(e.code(), e),
        };
        let plan = match self.services.plan(&start) {
            Ok(plan) => plan,
            Err((why, message)) => return error_reply(why, message),
        };
        let (addr, to, user) = (ctx.address(), ctx.reply_ref(), j.user.clone());
        let services = self.services.clone();
        ctx.run_on_owner(move |o| owner::start(o, services, addr, to, user, start, plan));
        HandleIn::NoReply
    }

    fn chunk(&mut self, ctx: &mut ChannelCtx<'_, Answer>, payload: &Payload) -> HandleIn {
        let max_pending = self.services.config.max_pending_chunks;
        let Some(j) = self.joined.as_mut() else {
            return error_reply("not_joined", "join first");
        };
        let Payload::Binary(msg) = payload else {
            return error_reply("invalid_chunk", "upload_chunk is a binary payload");
        };
        let (header, data) = match upload::decode_chunk(msg) {
            Ok(parts) => parts,
            Err(e) => return error_reply("invalid_chunk", e),
        };
        if j.pending >= max_pending {
            return error_reply(
                "too_many_pending_chunks",
                format!("at most {max_pending} chunks may wait for their answer"),
            );
        }
        j.pending += 1;
        let data = msg.slice_ref(data);
        let (addr, to, user) = (ctx.address(), ctx.reply_ref(), j.user.clone());
        let services = self.services.clone();
        ctx.run_on_owner(move |o| owner::chunk(o, services, addr, to, user, header, data));
        HandleIn::NoReply
    }
}

impl Channel for UploadChannel {
    type Info = Answer;

    fn join(
        &mut self,
        ctx: &mut ChannelCtx<'_, Answer>,
        payload: Payload,
    ) -> Result<Payload, Payload> {
        let params = params(&payload)?;
        let anonymous = ctx.assigns::<Identity>().is_some_and(|i| i.anonymous);
        let user = match &self.auth {
            Some(auth) => authorize_channel_join(auth, ctx, &params)?.id,
            None => ctx
                .assigns::<Identity>()
                .map(|i| i.user.id.clone())
                .ok_or_else(|| reason("access_denied"))?,
        };
        if anonymous && params.get("token").is_none() {
            return Err(reason("access_denied"));
        }
        if topic_id(ctx.topic(), PREFIX) != Some(user.as_str()) {
            return Err(reason("access_denied"));
        }
        let c = &self.services.config;
        let response = json!({
            "user_id": user,
            "chunk_size": c.chunk_size.min(self.services.max_chunk_size),
            "min_chunk_size": c.min_chunk_size,
            "max_chunk_size": self.services.max_chunk_size,
            "max_file_size": c.max_file_size,
        });
        self.joined = Some(Joined { user, pending: 0 });
        Ok(Payload::json(&response))
    }

    fn handle_in(
        &mut self,
        ctx: &mut ChannelCtx<'_, Answer>,
        event: &str,
        payload: Payload,
    ) -> HandleIn {
        match event {
            "upload_start" => self.start(ctx, &payload),
            "upload_chunk" => self.chunk(ctx, &payload),
            _ => HandleIn::error(reason("unknown_event")),
        }
    }

    fn handle_info(&mut self, ctx: &mut ChannelCtx<'_, Answer>, answer: Answer) -> HandleInfo {
        if answer.chunk {
            if let Some(j) = self.joined.as_mut() {
                j.pending = j.pending.saturating_sub(1);
            }
        }
        if let Err(e) = ctx.reply(&answer.to, answer.status, &answer.payload) {
            tracing::warn!(error = %e, "upload answer not encoded");
        }
        HandleInfo::Continue
    }
}

// --- Configuration (this feature's section of the config file) ---------------------

/// Resumable chunked uploads (`uploads:<user id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Where uploads live; relative paths are under `data_dir`.
    pub dir: PathBuf,
    /// Chunk size offered when `upload_start` does not ask for one.
    pub chunk_size: u32,
    /// Smallest chunk size a client may ask for.
    pub min_chunk_size: u32,
    /// Largest chunk size a client may ask for (also capped to fit `websocket.max_message_size`).
    pub max_chunk_size: u32,
    /// Chunks per upload at most.
    pub max_chunks: u32,
    /// Largest file, in bytes.
    pub max_file_size: u64,
    /// Unfinished uploads one user may have at once.
    pub max_concurrent_per_user: usize,
    /// Bytes all uploads may take on disk: completed files plus the chunks unfinished ones have
    /// been sent (taken as they arrive; a chunk past it is refused with `quota_exceeded`).
    pub quota_bytes: u64,
    /// Declared sizes one user's unfinished uploads may add up to.
    pub max_unfinished_bytes_per_user: u64,
    /// An unfinished upload without a chunk or `upload_start` for this long is deleted.
    pub expire_after_ms: u64,
    /// An upload that has not been sent a single chunk is deleted after this long.
    pub unstarted_expire_after_ms: u64,
    /// Chunks one connection may have waiting to be written; more are refused until some land.
    pub max_pending_chunks: usize,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            dir: PathBuf::from("uploads"),
            chunk_size: 256 * 1024,
            min_chunk_size: 4 * 1024,
            max_chunk_size: 512 * 1024,
            max_chunks: 16_384,
            max_file_size: 256 << 20,
            max_concurrent_per_user: 4,
            quota_bytes: 10 << 30,
            max_unfinished_bytes_per_user: 1 << 30,
            expire_after_ms: 24 * 3600 * 1000,
            unstarted_expire_after_ms: 5 * 60 * 1000,
            max_pending_chunks: 8,
        }
    }
}

impl UploadsConfig {
    /// The uploads directory: `dir`, under `data_dir` when relative.
    pub fn path(&self, data_dir: &Path) -> PathBuf {
        crate::ops::checks::under_data_dir(data_dir, &self.dir)
    }

    /// `expire_after_ms` as a duration.
    pub fn expire_after(&self) -> Duration {
        Duration::from_millis(self.expire_after_ms)
    }

    /// `unstarted_expire_after_ms` as a duration.
    pub fn unstarted_expire_after(&self) -> Duration {
        Duration::from_millis(self.unstarted_expire_after_ms)
    }

    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (
                !self.dir.as_os_str().is_empty(),
                "uploads.dir must not be empty",
            ),
            (
                self.min_chunk_size > 0
                    && self.min_chunk_size <= self.chunk_size
                    && self.chunk_size <= self.max_chunk_size,
                "uploads: 0 < min_chunk_size <= chunk_size <= max_chunk_size is required",
            ),
            (
                (1..=1_000_000).contains(&self.max_chunks),
                "uploads.max_chunks must be within 1..=1000000",
            ),
            (self.max_file_size > 0, "uploads.max_file_size must be > 0"),
            (
                self.max_concurrent_per_user > 0,
                "uploads.max_concurrent_per_user must be > 0",
            ),
            (self.quota_bytes > 0, "uploads.quota_bytes must be > 0"),
            (
                self.expire_after_ms > 0,
                "uploads.expire_after_ms must be > 0",
            ),
            (
                self.unstarted_expire_after_ms > 0,
                "uploads.unstarted_expire_after_ms must be > 0",
            ),
            (
                self.max_unfinished_bytes_per_user > 0,
                "uploads.max_unfinished_bytes_per_user must be > 0",
            ),
            (
                self.max_pending_chunks > 0,
                "uploads.max_pending_chunks must be > 0",
            ),
        ];
        crate::ops::checks::failed(&checks)
    }
}
