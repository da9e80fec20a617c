//! The `document:<id>` channel: collaborative plain-text documents edited by many clients
//! through the server (the Jupiter / Google Wave / ot.js model), on top of the pure OT core in
//! [`crate::document`]. Written with the public channel API only.
//!
//! Client → server:
//! - join `{token?, offsets?: "chars" | "utf16", version?}` → ok `{user: {id, name}}`, then a push:
//!   - `document_state` `{content, version}`: the whole document (a fresh join, or a re-join
//!     whose `version` the history no longer reaches);
//!   - `document_catchup` `{from, version, operations: [{op, version, user_id, client_id,
//!     seq}]}`: for a re-join with the `version` it last knew, the revisions it missed. Its own
//!     revision among them acknowledges its operation in flight; one that is not there is
//!     resent with the same `client_id` and `seq` (never applied twice).
//!
//!   A missing document is created empty, or with `documents.create_on_join = false` the join
//!   is refused with `{"reason": "Document not found"}`.
//! - `operation` `{op, version, client_id?, seq?}` (`op` in the simple form or the ot.js form,
//!   based on `version`) → rebased over the revisions since `version`, applied, appended to the
//!   log, then — once committed — acknowledged `{version, seq}` and broadcast to every other
//!   subscriber as `operation` `{op, version, user_id, client_id, seq, op_utf16?}`. Errors:
//!   `{reason: "resync", version}` (re-join), `invalid_operation`, `operation_too_large`,
//!   `document_too_large`, `stale_seq`, `overloaded` (retry), `storage_error` (re-join).
//! - `resync` (broadcast) `{reason}`: the document was reloaded after a storage failure;
//!   re-join with the last known version.
//!
//! Positions count Unicode scalar values unless the join asked for UTF-16 code units; then
//! every operation is converted at this edge (offsets that split a surrogate pair are refused)
//! and catch-ups carry UTF-16 operations; broadcasts carry both forms (`op_utf16` when they
//! differ). See `docs/PROTOCOL.md`.
//!
//! The document lives on its topic's owner shard ([`owner`]); its durable log in its own SQLite
//! database ([`crate::storage::documents`]).

pub mod owner;

use super::auth::{authorize_channel_join, Authenticator, Identity, User};
use super::{params, reason, topic_id};
use crate::core::{Channel, ChannelCtx, HandleIn, HandleInfo, Payload, TerminateReason};
use crate::document::DocumentLimits;
use crate::storage::config::Synchronous;
pub use crate::storage::documents::{DocumentStore, DocumentStoreThread, StoreError, StoreOptions};
use owner::{JoinRequest, Offsets, OpRequest, ToChannel};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Topic prefix this channel is routed at.
pub const PREFIX: &str = "document:";
/// The join refusal for a missing document when documents are not created on join.
pub const NOT_FOUND: &str = "Document not found";
/// Longest `client_id`, in bytes.
pub const MAX_CLIENT_ID: usize = 128;

/// The document id of a `document:<id>` topic.
fn doc_id(topic: &str) -> &str {
    topic.strip_prefix(PREFIX).unwrap_or(topic)
}

/// What every document channel shares. Dropping the last reference (when the server's routes
/// go away) stops the store thread after it has answered what is queued.
#[derive(Debug)]
pub struct DocumentServices {
    auth: Arc<Authenticator>,
    store: DocumentStore,
    config: DocumentsConfig,
    limits: DocumentLimits,
    max_members: usize,
    /// With `create_on_join` off: the documents that exist (read at startup).
    known: Option<HashSet<String>>,
    _thread: DocumentStoreThread,
}

impl DocumentServices {
    /// Opens the documents database under `data_dir` and starts its thread; `max_members`
    /// (`[rooms]`) bounds the connections per document.
    pub fn open(
        docs: &DocumentsConfig,
        data_dir: &Path,
        max_members: usize,
        auth: Arc<Authenticator>,
    ) -> Result<Arc<Self>, StoreError> {
        let thread = DocumentStoreThread::start(&docs.store_options(data_dir))?;
        let known = if docs.create_on_join {
            None
        } else {
            Some(thread.document_ids_blocking()?)
        };
        Ok(Arc::new(DocumentServices {
            auth,
            store: thread.handle(),
            limits: DocumentLimits {
                max_chars: docs.max_chars,
                max_op_size: docs.max_op_size,
                history: docs.history,
                recent_clients: docs.recent_clients,
            },
            config: docs.clone(),
            max_members,
            known,
            _thread: thread,
        }))
    }

    /// The store handle (tests and tools).
    pub fn store(&self) -> DocumentStore {
        self.store.clone()
    }

    /// A channel for one join (the route's factory).
    pub fn channel(self: &Arc<Self>) -> DocumentChannel {
        DocumentChannel {
            services: self.clone(),
            joined: None,
        }
    }
}

/// One joined `document:<id>` topic on one socket.
pub struct DocumentChannel {
    services: Arc<DocumentServices>,
    joined: Option<Joined>,
}

struct Joined {
    user: User,
    user_id: Arc<str>,
    /// Joined with a token (not as a guest): the user id is stable across connections.
    authenticated: bool,
    offsets: Offsets,
    /// Operations sent to the owner and not answered yet.
    pending: usize,
}

fn invalid(message: &str) -> HandleIn {
    HandleIn::error(Payload::json(
        &json!({ "reason": "invalid_operation", "message": message }),
    ))
}

/// An optional non-negative integer that fits the database (`i64`).
fn optional_u64(value: Option<&Value>) -> Result<Option<u64>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| i64::try_from(*n).is_ok())
            .map(Some)
            .ok_or(()),
    }
}

impl DocumentChannel {
    fn operation(&mut self, ctx: &mut ChannelCtx<'_, ToChannel>, payload: &Payload) -> HandleIn {
        let max_pending = self.services.config.max_pending_ops;
        let Some(j) = self.joined.as_mut() else {
            return HandleIn::error(reason("not_joined"));
        };
        let mut params = match params(payload) {
            Ok(p) => p,
            Err(e) => return HandleIn::error(e),
        };
        let op = match params.get_mut("op").map(Value::take) {
            Some(Value::Null) | None => return invalid("\"op\" is required"),
            Some(op) => op,
        };
        let version = match optional_u64(params.get("version")) {
            Ok(Some(v)) => v,
            _ => return invalid("\"version\" must be a non-negative integer"),
        };
        let Ok(seq) = optional_u64(params.get("seq")) else {
            return invalid("\"seq\" must be a non-negative integer");
        };
        let client_id = match params.get("client_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_CLIENT_ID => Some(s.clone()),
            Some(_) => {
                return invalid("\"client_id\" must be a string of 1 to 128 bytes");
            }
        };
        if j.pending >= max_pending {
            return HandleIn::error(Payload::json(&json!({
                "reason": "overloaded",
                "message": "too many operations waiting for acknowledgement",
            })));
        }
        j.pending += 1;
        let req = OpRequest {
            addr: ctx.address(),
            reply: ctx.reply_ref(),
            user_id: j.user_id.clone(),
            authenticated: j.authenticated,
            offsets: j.offsets,
            op,
            version,
            client_id,
            seq,
        };
        let services = self.services.clone();
        ctx.run_on_owner(move |owner| owner::operation(owner, &services, req));
        HandleIn::NoReply
    }
}

impl Channel for DocumentChannel {
    type Info = ToChannel;

    fn join(
        &mut self,
        ctx: &mut ChannelCtx<'_, ToChannel>,
        payload: Payload,
    ) -> Result<Payload, Payload> {
        let params = params(&payload)?;
        let user = authorize_channel_join(&self.services.auth, ctx, &params)?;
        let id = topic_id(ctx.topic(), PREFIX).ok_or_else(|| reason("invalid_topic"))?;
        let offsets = match params.get("offsets") {
            None | Some(Value::Null) => Offsets::Chars,
            Some(Value::String(s)) if s == "chars" => Offsets::Chars,
            Some(Value::String(s)) if s == "utf16" => Offsets::Utf16,
            Some(_) => return Err(reason("invalid_offsets")),
        };
        let since = optional_u64(params.get("version")).map_err(|()| reason("invalid_version"))?;
        if let Some(known) = &self.services.known {
            if !known.contains(id) {
                return Err(reason(NOT_FOUND));
            }
        }
        let req = JoinRequest {
            addr: ctx.address(),
            offsets,
            since,
        };
        let services = self.services.clone();
        ctx.run_on_owner(move |owner| owner::join(owner, &services, req));
        let guest = ctx.assigns::<Identity>().is_some_and(|i| i.anonymous)
            && params.get("token").is_none_or(Value::is_null);
        let response = Payload::json(&json!({ "user": user.summary() }));
        self.joined = Some(Joined {
            user_id: Arc::from(user.id.as_str()),
            authenticated: !guest,
            user,
            offsets,
            pending: 0,
        });
        Ok(response)
    }

    fn handle_in(
        &mut self,
        ctx: &mut ChannelCtx<'_, ToChannel>,
        event: &str,
        payload: Payload,
    ) -> HandleIn {
        match event {
            "operation" => self.operation(ctx, &payload),
            _ => HandleIn::error(reason("unknown_event")),
        }
    }

    fn handle_info(&mut self, ctx: &mut ChannelCtx<'_, ToChannel>, msg: ToChannel) -> HandleInfo {
        match msg {
            ToChannel::State(payload) => push(ctx, "document_state", &payload),
            ToChannel::CatchUp(payload) => push(ctx, "document_catchup", &payload),
            ToChannel::Refused(why) => {
                push(ctx, "document_error", &reason(why.reason()));
                return HandleInfo::Stop;
            }
            ToChannel::Reply {
                to,
                status,
                payload,
            } => {
                if let Some(j) = self.joined.as_mut() {
                    j.pending = j.pending.saturating_sub(1);
                }
                if let Err(e) = ctx.reply(&to, status, &payload) {
                    tracing::warn!(topic = %ctx.topic(), error = %e, "reply cannot be encoded");
                }
            }
        }
        HandleInfo::Continue
    }

    fn terminate(&mut self, ctx: &mut ChannelCtx<'_, ToChannel>, _why: TerminateReason) {
        if self.joined.take().is_some() {
            let services = self.services.clone();
            ctx.run_on_owner(move |owner| owner::leave(owner, &services));
        }
    }
}

fn push(ctx: &mut ChannelCtx<'_, ToChannel>, event: &str, payload: &Payload) {
    if let Err(e) = ctx.push(event, payload) {
        tracing::warn!(topic = %ctx.topic(), event, error = %e, "push cannot be encoded");
    }
}

impl DocumentChannel {
    /// The user this channel acts for, once joined.
    pub fn user(&self) -> Option<&User> {
        self.joined.as_ref().map(|j| &j.user)
    }
}

// --- Configuration (this feature's section of the config file) ---------------------

/// `document:<id>` channels: collaborative text documents (operational transform), their
/// limits and their own database (an append-only operation log with periodic snapshots).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Create a missing document (empty) on the first join by a user allowed to join it. When
    /// off, joining a document that is not in the database is refused with
    /// `{"reason": "Document not found"}` (the set of documents is read at startup).
    pub create_on_join: bool,
    /// Most characters (Unicode scalar values) a document may grow to.
    pub max_chars: usize,
    /// Largest operation accepted: components plus inserted characters.
    pub max_op_size: usize,
    /// Applied operations kept per document to rebase late operations over and to catch up
    /// re-joining clients; a client further behind gets the whole document again.
    pub history: usize,
    /// A snapshot of the text is written every this many operations; a restart loads a
    /// snapshot and replays the operations logged after it.
    pub snapshot_every: u64,
    /// Clients per document whose last `seq` is remembered to recognize resent operations.
    pub recent_clients: usize,
    /// Documents a shard keeps in memory at most; idle ones are unloaded first, and joins that
    /// would load more are refused (`overloaded`).
    pub max_loaded: usize,
    /// A document nobody has joined for this long is unloaded from memory.
    pub idle_unload_ms: u64,
    /// Operations one channel may have waiting for their acknowledgement; more are refused.
    pub max_pending_ops: usize,
    /// The documents database; relative paths are under `data_dir`.
    pub path: PathBuf,
    /// Requests waiting for the documents database beyond which operations are refused
    /// (`overloaded`) until it catches up.
    pub queue_capacity: usize,
    /// Requests committed together in one transaction at most.
    pub max_batch: usize,
    /// SQLite `synchronous`: `full` (an acknowledged operation survives power loss) or
    /// `normal` (survives a crash of the process).
    pub synchronous: Synchronous,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            create_on_join: true,
            max_chars: 5_000_000,
            max_op_size: 100_000,
            history: 1_000,
            snapshot_every: 500,
            recent_clients: 10_000,
            max_loaded: 10_000,
            idle_unload_ms: 60_000,
            max_pending_ops: 64,
            path: PathBuf::from("documents.sqlite3"),
            queue_capacity: 65_536,
            max_batch: 1_024,
            synchronous: Synchronous::Full,
        }
    }
}

impl DocumentsConfig {
    /// What the durable log's thread needs, with the database under `data_dir`.
    pub fn store_options(&self, data_dir: &Path) -> StoreOptions {
        StoreOptions {
            path: self.database_path(data_dir),
            synchronous: self.synchronous,
            queue_capacity: self.queue_capacity,
            max_batch: self.max_batch,
            history: self.history,
        }
    }

    /// The database file: `path`, under `data_dir` when relative.
    pub fn database_path(&self, data_dir: &Path) -> PathBuf {
        crate::ops::checks::under_data_dir(data_dir, &self.path)
    }

    /// `idle_unload_ms` as a duration.
    pub fn idle_unload(&self) -> Duration {
        Duration::from_millis(self.idle_unload_ms)
    }

    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (self.max_chars > 0, "documents.max_chars must be > 0"),
            (self.max_op_size > 0, "documents.max_op_size must be > 0"),
            (
                (1..=1_000_000).contains(&self.history),
                "documents.history must be within 1..=1000000",
            ),
            (
                self.snapshot_every > 0,
                "documents.snapshot_every must be > 0",
            ),
            (
                self.recent_clients > 0,
                "documents.recent_clients must be > 0",
            ),
            (self.max_loaded > 0, "documents.max_loaded must be > 0"),
            (
                self.idle_unload_ms > 0,
                "documents.idle_unload_ms must be > 0",
            ),
            (
                self.max_pending_ops > 0,
                "documents.max_pending_ops must be > 0",
            ),
            (
                !self.path.as_os_str().is_empty(),
                "documents.path must not be empty",
            ),
            (
                self.queue_capacity > 0,
                "documents.queue_capacity must be > 0",
            ),
            (
                (1..=100_000).contains(&self.max_batch),
                "documents.max_batch must be within 1..=100000",
            ),
        ];
        crate::ops::checks::failed(&checks)
    }
}
