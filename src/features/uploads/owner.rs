//! The owner side of uploads: every upload of one user lives on the owner shard of
//! `uploads:<user id>`, which keeps its state (chunks received, writes in flight, who waits for
//! the verdict) and does its file I/O with glommio (io_uring). Channels on any shard reach it
//! with `run_on_owner` and get answers in `handle_info`.
//!
//! Life of an upload: `Opening` (the partial file is being created) → `Active` (chunks are
//! written at their offsets; duplicates are answered without writing) → `Finalizing` (every
//! chunk landed and no write is in flight: fdatasync, read back and hash, write the description,
//! rename into place) → `Complete`, or back to `Active` with every chunk missing after a
//! checksum mismatch. An upload idle for `expire_after_ms` is dropped (its partial file deleted
//! and its quota released; a completed file stays); one that was never sent a chunk goes after
//! `unstarted_expire_after_ms`.
//!
//! **Quota** is taken as chunks arrive (a chunk the quota cannot take is refused with
//! `quota_exceeded`, the upload kept), so `upload_start`s that send nothing hold none of it; the
//! declared sizes of one user's unfinished uploads are capped by
//! `max_unfinished_bytes_per_user`.

use super::{Answer, UploadServices};
use crate::core::{Addr, OwnerCtx, Payload, ReplyRef, ReplyStatus};
use crate::protocol::binary::upload::{to_hex, ChunkHeader, ChunkPlan, UploadId, UploadStart};
use bytes::Bytes;
use glommio::io::{BufferedFile, Directory, OpenOptions};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes read per step while hashing a finished file (the shard yields between steps).
const HASH_BLOCK: u64 = 1 << 20;
/// Shortest wait before an idle upload is looked at again.
const MIN_EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// A push waiting for the outcome of the finalization.
type Waiter = (Addr<Answer>, ReplyRef);

/// One shard's uploads (of the users whose topic it owns).
#[derive(Default)]
pub(super) struct Registry {
    uploads: HashMap<UploadId, Upload>,
    /// Unfinished uploads per user.
    active: HashMap<String, Unfinished>,
}

/// One user's unfinished uploads.
#[derive(Default, Clone, Copy)]
struct Unfinished {
    count: usize,
    /// Their declared sizes, summed.
    bytes: u64,
}

impl Registry {
    fn finished(&mut self, user: &str, size: u64) {
        if let Some(u) = self.active.get_mut(user) {
            u.count -= 1;
            u.bytes = u.bytes.saturating_sub(size);
            if u.count == 0 {
                self.active.remove(user);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Opening,
    Active,
    Finalizing,
    Complete { file_id: String },
}

struct Upload {
    user: String,
    filename: String,
    sha256: [u8; 32],
    plan: ChunkPlan,
    received: Vec<u64>,
    received_count: u32,
    /// Bytes of the chunks received or being written (since the last checksum mismatch).
    claimed: u64,
    /// Quota held for this upload: the most it has claimed (not its declared size, so an upload
    /// that never sends a chunk holds nothing; a checksum mismatch keeps it, as the bytes stay on
    /// disk until they are sent again).
    reserved: u64,
    file: Option<Rc<BufferedFile>>,
    state: State,
    writes_in_flight: u32,
    last_activity: Instant,
    waiters: Vec<Waiter>,
}

impl Upload {
    fn is_received(&self, index: u32) -> bool {
        self.received[index as usize / 64] & (1 << (index % 64)) != 0
    }

    /// Marks chunk `index` received; false if it already was.
    fn mark(&mut self, index: u32) -> bool {
        if self.is_received(index) {
            return false;
        }
        self.received[index as usize / 64] |= 1 << (index % 64);
        self.received_count += 1;
        true
    }

    fn all_received(&self) -> bool {
        self.received_count == self.plan.total_chunks()
    }

    fn missing(&self) -> Vec<u32> {
        (0..self.plan.total_chunks())
            .filter(|&i| !self.is_received(i))
            .collect()
    }

    fn start_json(&self, id: UploadId) -> Value {
        let mut v = json!({
            "upload_id": id.to_hex(),
            "chunk_size": self.plan.chunk_size,
            "total_chunks": self.plan.total_chunks(),
            "missing": self.missing(),
            "upload_complete": false,
        });
        if let State::Complete { file_id } = &self.state {
            v["upload_complete"] = json!(true);
            v["file_id"] = json!(file_id);
            v["size"] = json!(self.plan.size);
            v["sha256"] = json!(to_hex(&self.sha256));
        }
        v
    }

    fn progress_json(&self, id: UploadId, index: u32) -> Value {
        json!({
            "upload_complete": false,
            "upload_id": id.to_hex(),
            "chunk_index": index,
            "chunks_received": self.received_count,
        })
    }

    fn complete_json(&self, id: UploadId, file_id: &str) -> Value {
        json!({
            "upload_complete": true,
            "upload_id": id.to_hex(),
            "file_id": file_id,
            "size": self.plan.size,
            "sha256": to_hex(&self.sha256),
            "chunks_received": self.received_count,
        })
    }
}

fn error(reason: &str, message: impl std::fmt::Display) -> Value {
    json!({ "reason": reason, "message": message.to_string() })
}

fn answer(o: &mut OwnerCtx<'_>, to: &Waiter, result: Result<Value, Value>, chunk: bool) {
    let (status, value) = match result {
        Ok(v) => (ReplyStatus::Ok, v),
        Err(v) => (ReplyStatus::Error, v),
    };
    o.send(
        &to.0,
        Answer {
            to: to.1.clone(),
            status,
            payload: Payload::json(&value),
            chunk,
        },
    );
}

fn partial_path(services: &UploadServices, id: UploadId) -> PathBuf {
    services.partial_dir.join(format!("{id}.part"))
}

/// `upload_start`: a new upload, or the state of an existing one.
pub(super) fn start(
    o: &mut OwnerCtx<'_>,
    services: Arc<UploadServices>,
    addr: Addr<Answer>,
    to: ReplyRef,
    user: String,
    start: UploadStart,
    plan: ChunkPlan,
) {
    let waiter = (addr, to);
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    if let Some(id) = start.upload_id {
        let result = match reg.uploads.get_mut(&id).filter(|u| u.user == user) {
            None => Err(error(
                "unknown_upload",
                "no such upload (finished long ago, or expired)",
            )),
            Some(up) if up.state == State::Opening => {
                Err(error("unknown_upload", "the upload is not started yet"))
            }
            Some(up)
                if up.plan.size != start.size
                    || up.sha256 != start.sha256
                    || start.chunk_size.is_some_and(|c| c != up.plan.chunk_size) =>
            {
                Err(error(
                    "upload_mismatch",
                    "size, sha256 or chunk_size differ from the upload's",
                ))
            }
            Some(up) => {
                up.last_activity = o.now().instant;
                Ok(up.start_json(id))
            }
        };
        drop(reg);
        return answer(o, &waiter, result, false);
    }

    let active = reg.active.get(&user).copied().unwrap_or_default();
    if active.count >= services.config.max_concurrent_per_user {
        drop(reg);
        let e = error(
            "too_many_uploads",
            format!(
                "at most {} unfinished uploads per user",
                services.config.max_concurrent_per_user
            ),
        );
        return answer(o, &waiter, Err(e), false);
    }
    if active.bytes.saturating_add(plan.size) > services.config.max_unfinished_bytes_per_user {
        drop(reg);
        let e = error(
            "quota_exceeded",
            format!(
                "a user's unfinished uploads may declare at most {} bytes",
                services.config.max_unfinished_bytes_per_user
            ),
        );
        return answer(o, &waiter, Err(e), false);
    }
    // Quota is taken as chunks arrive; a file that cannot fit now is refused at once.
    if !services.would_fit(plan.size) {
        drop(reg);
        let e = error("quota_exceeded", "the server's upload storage is full");
        return answer(o, &waiter, Err(e), false);
    }
    let mut raw = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut raw) {
        drop(reg);
        tracing::error!(error = %e, "no randomness for an upload id");
        return answer(o, &waiter, Err(error("storage_error", "try again")), false);
    }
    let id = UploadId(raw);
    let words = (plan.total_chunks() as usize).div_ceil(64);
    reg.uploads.insert(
        id,
        Upload {
            user: user.clone(),
            filename: start.filename,
            sha256: start.sha256,
            plan,
            received: vec![0; words],
            received_count: 0,
            claimed: 0,
            reserved: 0,
            file: None,
            state: State::Opening,
            writes_in_flight: 0,
            last_activity: o.now().instant,
            waiters: Vec::new(),
        },
    );
    let unfinished = reg.active.entry(user).or_default();
    unfinished.count += 1;
    unfinished.bytes += plan.size;
    drop(reg);
    let path = partial_path(&services, id);
    let size = plan.size;
    o.spawn_then(
        async move {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .buffered_open(&path)
                .await?;
            // The final size up front (sparse): chunks land at their offsets in any order.
            file.truncate(size).await?;
            Ok::<_, glommio::GlommioError<()>>(file)
        },
        move |o, result| opened(o, services, id, waiter, result),
    );
}

fn opened(
    o: &mut OwnerCtx<'_>,
    services: Arc<UploadServices>,
    id: UploadId,
    waiter: Waiter,
    result: glommio::Result<BufferedFile, ()>,
) {
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    let Some(up) = reg.uploads.get_mut(&id) else {
        return;
    };
    match result {
        Ok(file) => {
            up.file = Some(Rc::new(file));
            up.state = State::Active;
            up.last_activity = o.now().instant;
            let v = up.start_json(id);
            drop(reg);
            answer(o, &waiter, Ok(v), false);
            let first_check = services.config.unstarted_expire_after();
            schedule_expiry(o, services.clone(), id, first_check);
        }
        Err(e) => {
            tracing::error!(upload = %id, error = %e, "cannot create the partial upload file");
            let up = reg.uploads.remove(&id).expect("looked up above");
            reg.finished(&up.user, up.plan.size);
            drop(reg);
            answer(
                o,
                &waiter,
                Err(error("storage_error", "cannot store the upload")),
                false,
            );
        }
    }
}

/// `upload_chunk`.
pub(super) fn chunk(
    o: &mut OwnerCtx<'_>,
    services: Arc<UploadServices>,
    addr: Addr<Answer>,
    to: ReplyRef,
    user: String,
    header: ChunkHeader,
    data: Bytes,
) {
    let waiter = (addr, to);
    let id = header.upload_id;
    let index = header.chunk_index;
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    let up = match reg.uploads.get_mut(&id) {
        Some(up) if up.user == user && up.state != State::Opening => up,
        _ => {
            drop(reg);
            let e = error(
                "unknown_upload",
                "no such upload (finished long ago, or expired)",
            );
            return answer(o, &waiter, Err(e), true);
        }
    };
    // Activity is what makes progress: a chunk refused below does not keep the upload alive.
    let now = o.now().instant;
    match &up.state {
        State::Complete { .. } | State::Finalizing => up.last_activity = now,
        State::Opening | State::Active => {}
    }
    match &up.state {
        State::Complete { file_id } => {
            let v = up.complete_json(id, file_id);
            drop(reg);
            return answer(o, &waiter, Ok(v), true);
        }
        State::Finalizing => {
            up.waiters.push(waiter);
            return;
        }
        State::Opening | State::Active => {}
    }
    let total = up.plan.total_chunks();
    let check = if header.total_chunks != total {
        Err(error(
            "total_chunks_mismatch",
            format!("this upload has {total} chunks"),
        ))
    } else {
        match up.plan.chunk_len(index) {
            Some(len) if len as usize == data.len() => Ok(()),
            expected => Err(error(
                "bad_chunk_length",
                format!(
                    "chunk {index} must be {} bytes",
                    expected.unwrap_or_default()
                ),
            )),
        }
    };
    if let Err(e) = check {
        drop(reg);
        return answer(o, &waiter, Err(e), true);
    }
    if up.is_received(index) {
        // A duplicate: nothing to write.
        up.last_activity = now;
        drop(reg);
        return settle(o, &services, id, index, waiter);
    }
    let Some(file) = up.file.clone() else {
        drop(reg);
        return answer(
            o,
            &waiter,
            Err(error("storage_error", "upload file missing")),
            true,
        );
    };
    let len = data.len() as u64;
    let claimed = up.claimed + len;
    if claimed > up.reserved {
        if !services.reserve(claimed - up.reserved) {
            drop(reg);
            let e = error(
                "quota_exceeded",
                "the server's upload storage is full: the upload is kept, send this chunk later",
            );
            return answer(o, &waiter, Err(e), true);
        }
        up.reserved = claimed;
    }
    up.claimed = claimed;
    up.last_activity = now;
    up.writes_in_flight += 1;
    let offset = up.plan.offset(index);
    drop(reg);
    o.spawn_then(write_all_at(file, data, offset), move |o, result| {
        written(o, services, id, index, len, waiter, result)
    });
}

async fn write_all_at(file: Rc<BufferedFile>, data: Bytes, offset: u64) -> Result<(), String> {
    let mut done = 0;
    while done < data.len() {
        let n = file
            .write_at(data[done..].to_vec(), offset + done as u64)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the disk took no bytes".into());
        }
        done += n;
    }
    Ok(())
}

fn written(
    o: &mut OwnerCtx<'_>,
    services: Arc<UploadServices>,
    id: UploadId,
    index: u32,
    len: u64,
    waiter: Waiter,
    result: Result<(), String>,
) {
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    let Some(up) = reg.uploads.get_mut(&id) else {
        drop(reg);
        let e = error("unknown_upload", "the upload expired");
        return answer(o, &waiter, Err(e), true);
    };
    up.writes_in_flight -= 1;
    match result {
        Ok(()) => {
            if !up.mark(index) {
                // The same chunk was written twice concurrently: it is claimed once.
                up.claimed -= len;
            }
            drop(reg);
            settle(o, &services, id, index, waiter);
        }
        Err(e) => {
            tracing::error!(upload = %id, chunk = index, error = %e, "chunk not written");
            // Its quota stays reserved: part of it may be on disk, and it is sent again.
            up.claimed -= len;
            drop(reg);
            answer(
                o,
                &waiter,
                Err(error("storage_error", "chunk not stored: send it again")),
                true,
            );
            // Pushes waiting for the verdict may have waited for this write only.
            maybe_finalize(o, &services, id);
        }
    }
}

/// A chunk of `id` is on disk: answer its progress, or — once every chunk is — wait for the
/// verdict with the others.
fn settle(
    o: &mut OwnerCtx<'_>,
    services: &Arc<UploadServices>,
    id: UploadId,
    index: u32,
    waiter: Waiter,
) {
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    let Some(up) = reg.uploads.get_mut(&id) else {
        return;
    };
    if up.state == State::Active && up.all_received() {
        up.waiters.push(waiter);
        drop(reg);
        maybe_finalize(o, services, id);
    } else {
        let v = up.progress_json(id, index);
        drop(reg);
        answer(o, &waiter, Ok(v), true);
    }
}

/// Starts the finalization once every chunk is written and no write is in flight.
fn maybe_finalize(o: &mut OwnerCtx<'_>, services: &Arc<UploadServices>, id: UploadId) {
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    let Some(up) = reg.uploads.get_mut(&id) else {
        return;
    };
    if up.state != State::Active
        || !up.all_received()
        || up.writes_in_flight > 0
        || up.waiters.is_empty()
    {
        return;
    }
    let Some(file) = up.file.clone() else {
        return;
    };
    up.state = State::Finalizing;
    let file_id = id.to_hex();
    let meta = serde_json::to_vec_pretty(&json!({
        "file_id": file_id,
        "filename": up.filename,
        "size": up.plan.size,
        "sha256": to_hex(&up.sha256),
        "user_id": up.user,
        "completed_at_ms": o.now().unix_ms,
    }))
    .expect("plain JSON");
    let job = Finalize {
        file,
        size: up.plan.size,
        sha256: up.sha256,
        partial: partial_path(services, id),
        dest: services.files_dir.join(&file_id),
        meta_tmp: services.files_dir.join(format!("{file_id}.json.tmp")),
        meta_path: services.files_dir.join(format!("{file_id}.json")),
        meta,
        files_dir: services.files_dir.clone(),
    };
    drop(reg);
    let services = services.clone();
    o.spawn_then(job.run(), move |o, result| {
        finalized(o, &services, id, file_id, result)
    });
}

enum FinalizeError {
    Mismatch { size: u64, sha256: [u8; 32] },
    Io(String),
}

fn io_err(e: impl std::fmt::Display) -> FinalizeError {
    FinalizeError::Io(e.to_string())
}

struct Finalize {
    file: Rc<BufferedFile>,
    size: u64,
    sha256: [u8; 32],
    partial: PathBuf,
    dest: PathBuf,
    meta_tmp: PathBuf,
    meta_path: PathBuf,
    meta: Vec<u8>,
    files_dir: PathBuf,
}

impl Finalize {
    /// Verifies the partial file, then moves it into place with its description.
    async fn run(self) -> Result<(), FinalizeError> {
        self.file.fdatasync().await.map_err(io_err)?;
        let size = self.file.file_size().await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut pos = 0u64;
        while pos < size {
            let n = (size - pos).min(HASH_BLOCK) as usize;
            let block = self.file.read_at(pos, n).await.map_err(io_err)?;
            if block.is_empty() {
                return Err(FinalizeError::Io("the file ended early".into()));
            }
            hasher.update(&block[..]);
            pos += block.len() as u64;
            glommio::yield_if_needed().await;
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&hasher.finalize());
        if size != self.size || sha256 != self.sha256 {
            return Err(FinalizeError::Mismatch { size, sha256 });
        }
        // The description first: a file in place always has one.
        let meta = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(&self.meta_tmp)
            .await
            .map_err(io_err)?;
        let meta = Rc::new(meta);
        write_all_at(meta.clone(), Bytes::from(self.meta), 0)
            .await
            .map_err(FinalizeError::Io)?;
        meta.fdatasync().await.map_err(io_err)?;
        drop(meta);
        glommio::io::rename(&self.meta_tmp, &self.meta_path)
            .await
            .map_err(io_err)?;
        glommio::io::rename(&self.partial, &self.dest)
            .await
            .map_err(io_err)?;
        let dir = Directory::open(&self.files_dir).await.map_err(io_err)?;
        dir.sync().await.map_err(io_err)?;
        Ok(())
    }
}

fn finalized(
    o: &mut OwnerCtx<'_>,
    services: &UploadServices,
    id: UploadId,
    file_id: String,
    result: Result<(), FinalizeError>,
) {
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    let Some(up) = reg.uploads.get_mut(&id) else {
        return;
    };
    let waiters = std::mem::take(&mut up.waiters);
    let outcome = match result {
        Ok(()) => {
            tracing::info!(upload = %id, size = up.plan.size, user = %up.user, "upload complete");
            up.state = State::Complete {
                file_id: file_id.clone(),
            };
            up.file = None;
            // The file holds exactly its size now.
            services.release(up.reserved.saturating_sub(up.plan.size));
            up.reserved = up.plan.size;
            let v = up.complete_json(id, &file_id);
            let (user, size) = (up.user.clone(), up.plan.size);
            reg.finished(&user, size);
            Ok(v)
        }
        Err(FinalizeError::Mismatch { size, sha256 }) => {
            tracing::info!(upload = %id, "upload checksum mismatch; its chunks are missing again");
            up.state = State::Active;
            up.received.iter_mut().for_each(|w| *w = 0);
            up.received_count = 0;
            // Its chunks come again; the quota they held stays (the bytes are on disk).
            up.claimed = 0;
            let mut e = error(
                "checksum_mismatch",
                "the file does not match its size and sha256: send its chunks again",
            );
            e["expected_sha256"] = json!(to_hex(&up.sha256));
            e["actual_sha256"] = json!(to_hex(&sha256));
            e["expected_size"] = json!(up.plan.size);
            e["actual_size"] = json!(size);
            e["upload_id"] = json!(id.to_hex());
            Err(e)
        }
        Err(FinalizeError::Io(e)) => {
            tracing::error!(upload = %id, error = %e, "upload not finalized");
            up.state = State::Active;
            Err(error(
                "storage_error",
                "the upload could not be stored: send a chunk again to retry",
            ))
        }
    };
    drop(reg);
    for w in &waiters {
        answer(o, w, outcome.clone(), true);
    }
}

fn schedule_expiry(
    o: &mut OwnerCtx<'_>,
    services: Arc<UploadServices>,
    id: UploadId,
    after: Duration,
) {
    o.run_after(after, move |o| expire(o, services, id));
}

/// Drops an upload nobody touched for `expire_after_ms` (`unstarted_expire_after_ms` while it
/// has not been sent a chunk).
fn expire(o: &mut OwnerCtx<'_>, services: Arc<UploadServices>, id: UploadId) {
    let registry = o.state::<Registry>();
    let mut reg = registry.borrow_mut();
    let Some(up) = reg.uploads.get(&id) else {
        return;
    };
    let ttl = if up.reserved == 0 && up.received_count == 0 {
        services.config.unstarted_expire_after()
    } else {
        services.config.expire_after()
    };
    let idle = o.now().instant.saturating_duration_since(up.last_activity);
    if idle < ttl || up.writes_in_flight > 0 || up.state == State::Finalizing {
        drop(reg);
        let wait = ttl.saturating_sub(idle).max(MIN_EXPIRY_CHECK);
        return schedule_expiry(o, services, id, wait);
    }
    let up = reg.uploads.remove(&id).expect("looked up above");
    if matches!(up.state, State::Complete { .. }) {
        return;
    }
    reg.finished(&up.user, up.plan.size);
    drop(reg);
    services.release(up.reserved);
    tracing::info!(upload = %id, user = %up.user, "unfinished upload expired");
    let path = partial_path(&services, id);
    let file = up.file;
    o.spawn_then(
        async move {
            drop(file);
            glommio::io::remove(&path).await.map_err(|e| e.to_string())
        },
        move |_, result| {
            if let Err(e) = result {
                tracing::warn!(upload = %id, error = %e, "expired upload file not deleted");
            }
        },
    );
}
