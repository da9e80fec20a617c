//! The documents' durable state: SQLite (WAL) in `<data_dir>/documents.sqlite3`, on its own
//! thread, apart from the chat storage so that a busy document never waits behind chat writes.
//!
//! Per document the database holds its durable `version`, an append-only operation log (one
//! row per version) and snapshots of the text every `documents.snapshot_every` operations.
//! Loading takes a snapshot and replays the operations logged after it. Old rows are compacted
//! away when a snapshot is written: what is kept is the newest snapshot at least
//! `documents.history` operations old and everything after it, so a restart still rebuilds a full
//! history window (clients that re-join after a restart can still be caught up).
//!
//! Shards never block on it: [`DocumentStore`] methods put the request on the queue **at the
//! time of the call** (so appends from one owner reach the database in version order) and return
//! a future answered over a oneshot flume channel. The thread drains what is queued (up to
//! `documents.max_batch` requests), runs it in one transaction (each request in its own
//! savepoint), commits, and only then answers: an answered append is committed, and with WAL it
//! survives `kill -9` (and power loss with `synchronous = "full"`).
//!
//! Appends must be contiguous: an append of version `v` succeeds only if the stored version is
//! `v - 1`. After a failed append every later one of that document fails too, until the owner
//! reloads the document from what is stored.

use super::config::Synchronous;
use super::worker::{self, Deferred};
use crate::document::{Chars, Operation, Revision};
use ropey::Rope;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,   -- the last durable version
    created_at  INTEGER NOT NULL,   -- unix milliseconds
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE operations (
    doc         TEXT NOT NULL,
    version     INTEGER NOT NULL,   -- the version this operation produced
    op          TEXT NOT NULL,      -- ot.js array form, positions in Unicode scalar values
    client_id   TEXT,
    seq         INTEGER,
    user_id     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (doc, version)
) WITHOUT ROWID;
CREATE TABLE snapshots (
    doc         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    content     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (doc, version)
) WITHOUT ROWID;
";

/// Why a document store request failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or the store's thread started.
    #[error(transparent)]
    Start(#[from] worker::OpenError),
    /// A SQLite error in the request.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The batch's transaction could not begin or commit; nothing in it was stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// An append whose version is not the stored version plus one.
    #[error("document {doc:?}: version {version} does not follow the stored version {stored}")]
    Gap {
        /// The document id.
        doc: String,
        /// The version appended.
        version: u64,
        /// The document's stored version.
        stored: u64,
    },
    /// An operation cannot be read from (or encoded for) the log, or the log has a hole.
    #[error("document {doc:?}: stored operation {version} is unreadable: {message}")]
    Corrupt {
        /// The document id.
        doc: String,
        /// The version of the bad (or missing) operation.
        version: u64,
        /// What is wrong with it.
        message: String,
    },
    /// An append or snapshot of a document that is not stored.
    #[error("document {0:?} does not exist")]
    Missing(String),
    /// The store's thread has stopped (or stopped before answering).
    #[error("the document store is not running")]
    Closed,
}

/// One logged operation with who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The operation, its version and the submitting client's `client_id` and `seq`.
    pub revision: Revision,
    /// The author's user id.
    pub user_id: String,
    /// When it was applied, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// What loading a document gives: a snapshot and the operations logged after it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// The text at `snapshot_version`.
    pub snapshot: String,
    /// The version the snapshot is of.
    pub snapshot_version: u64,
    /// The operations logged after the snapshot, oldest first.
    pub log: Vec<LogEntry>,
}

impl StoredDocument {
    /// The version after replaying the log.
    pub fn version(&self) -> u64 {
        self.log
            .last()
            .map_or(self.snapshot_version, |e| e.revision.version)
    }
}

type Reply<T> = flume::Sender<Result<T, StoreError>>;

enum Request {
    Load {
        doc: String,
        create: bool,
        reply: Reply<Option<StoredDocument>>,
    },
    Append {
        doc: String,
        entry: LogEntry,
        reply: Reply<()>,
    },
    Snapshot {
        doc: String,
        version: u64,
        text: Rope,
        reply: Reply<()>,
    },
    Ids {
        reply: Reply<HashSet<String>>,
    },
    Shutdown,
}

/// The handle owners use: cheap to clone, `Send`.
#[derive(Clone)]
pub struct DocumentStore {
    tx: flume::Sender<Request>,
    capacity: usize,
}

impl std::fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentStore")
            .field("queued", &self.tx.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl DocumentStore {
    /// True when `documents.queue_capacity` requests are waiting: new operations are refused
    /// until the database catches up. (The queue itself is unbounded so that an operation
    /// already applied in memory is never refused by it; this check, made before applying,
    /// bounds it to the capacity plus what the shards admit concurrently.)
    pub fn is_overloaded(&self) -> bool {
        self.tx.len() >= self.capacity
    }

    /// Requests waiting for the thread.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Enqueues now; the future resolves with the thread's answer.
    fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static {
        let (reply, answer) = flume::bounded(1);
        let sent = self.tx.send(make(reply)).map_err(|_| StoreError::Closed);
        async move {
            sent?;
            answer.recv_async().await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Loads document `doc`: `None` if it does not exist and `create` is false; created empty
    /// (version 0) if it does not exist and `create` is true.
    pub fn load(
        &self,
        doc: &str,
        create: bool,
    ) -> impl Future<Output = Result<Option<StoredDocument>, StoreError>> + 'static {
        let doc = doc.to_owned();
        self.call(move |reply| Request::Load { doc, create, reply })
    }

    /// Appends the operation that produced `entry.revision.version`; resolves once committed.
    pub fn append(
        &self,
        doc: &str,
        entry: LogEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let doc = doc.to_owned();
        self.call(move |reply| Request::Append { doc, entry, reply })
    }

    /// Stores `text` as the document's text at `version` (which must be durable by the time the
    /// thread gets to it: enqueue it after that version's append) and compacts older rows.
    /// `text` is a rope clone (cheap); it is turned into a string on the storage thread.
    pub fn snapshot(
        &self,
        doc: &str,
        version: u64,
        text: Rope,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let doc = doc.to_owned();
        self.call(move |reply| Request::Snapshot {
            doc,
            version,
            text,
            reply,
        })
    }

    /// The ids of every stored document.
    pub fn document_ids(&self) -> impl Future<Output = Result<HashSet<String>, StoreError>> {
        self.call(|reply| Request::Ids { reply })
    }
}

/// What the documents log's thread needs (from `[documents]`).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// Commit durability.
    pub synchronous: Synchronous,
    /// Requests waiting before operations are refused ([`DocumentStore::is_overloaded`]).
    pub queue_capacity: usize,
    /// Requests per transaction.
    pub max_batch: usize,
    /// Revisions kept behind the newest snapshot.
    pub history: usize,
}

/// The running store thread; [`DocumentStoreThread::stop`] (or drop) answers what is queued,
/// checkpoints the WAL and joins it.
pub struct DocumentStoreThread {
    store: DocumentStore,
    thread: worker::SqliteThread<Request>,
}

impl std::fmt::Debug for DocumentStoreThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentStoreThread")
            .field("path", &self.thread.path())
            .field("store", &self.store)
            .finish()
    }
}

impl DocumentStoreThread {
    /// Opens (creating and migrating) `config.database_path(data_dir)` and starts the thread.
    /// Errors opening the database are reported here.
    pub fn start(config: &StoreOptions) -> Result<Self, StoreError> {
        let db = worker::Database {
            name: "documents",
            path: config.path.clone(),
            synchronous: config.synchronous,
            migrations: &[SCHEMA_V1],
        };
        let settings = Settings {
            history: config.history as u64,
        };
        // Unbounded: see `DocumentStore::is_overloaded` for the bound.
        let thread =
            worker::SqliteThread::start(db, flume::unbounded(), config.max_batch, settings)?;
        Ok(DocumentStoreThread {
            store: DocumentStore {
                tx: thread.sender().clone(),
                capacity: config.queue_capacity,
            },
            thread,
        })
    }

    /// The handle owners use.
    pub fn handle(&self) -> DocumentStore {
        self.store.clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.thread.path()
    }

    /// The ids of every stored document, waiting for the answer: for startup, never on a shard.
    pub fn document_ids_blocking(&self) -> Result<HashSet<String>, StoreError> {
        let (reply, answer) = flume::bounded(1);
        self.store
            .tx
            .send(Request::Ids { reply })
            .map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Answers everything queued before this call, checkpoints the WAL and ends the thread.
    pub fn stop(self) -> Result<(), StoreError> {
        if self.thread.stop() {
            Ok(())
        } else {
            Err(StoreError::Closed)
        }
    }
}

#[derive(Clone, Copy)]
struct Settings {
    history: u64,
}

fn defer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Deferred {
    Box::new(move |commit_error| {
        let answer = match (commit_error, result) {
            (Some(e), _) => Err(StoreError::Commit(e.to_string())),
            (None, r) => r,
        };
        // The asker may be gone (its shard stopped); nothing to do then.
        let _ = reply.send(answer);
    })
}

impl worker::Job for Request {
    type Ctx = Settings;

    fn shutdown() -> Self {
        Request::Shutdown
    }

    fn is_shutdown(&self) -> bool {
        matches!(self, Request::Shutdown)
    }

    fn execute(self, tx: &mut Transaction<'_>, settings: &Settings) -> Deferred {
        execute(tx, self, *settings)
    }

    fn fail(self, e: &rusqlite::Error) {
        let err = || StoreError::Commit(e.to_string());
        match self {
            Request::Load { reply, .. } => drop(reply.send(Err(err()))),
            Request::Append { reply, .. } | Request::Snapshot { reply, .. } => {
                drop(reply.send(Err(err())))
            }
            Request::Ids { reply } => drop(reply.send(Err(err()))),
            Request::Shutdown => {}
        }
    }
}

/// Runs `f` in a savepoint, rolled back alone if it fails.
fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let sp = tx.savepoint()?;
    let out = f(&sp)?;
    sp.commit()?;
    Ok(out)
}

fn execute(tx: &mut Transaction<'_>, req: Request, settings: Settings) -> Deferred {
    let now = worker::unix_now_ms();
    match req {
        Request::Load { doc, create, reply } => defer(
            reply,
            in_savepoint(tx, |c| load(c, &doc, create, settings.history, now)),
        ),
        Request::Append { doc, entry, reply } => {
            defer(reply, in_savepoint(tx, |c| append(c, &doc, &entry, now)))
        }
        Request::Snapshot {
            doc,
            version,
            text,
            reply,
        } => defer(
            reply,
            in_savepoint(tx, |c| {
                snapshot(c, &doc, version, &text.to_string(), settings.history, now)
            }),
        ),
        Request::Ids { reply } => defer(reply, ids(tx)),
        Request::Shutdown => unreachable!("handled by the batch"),
    }
}

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn stored_version(c: &Connection, doc: &str) -> Result<Option<u64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT version FROM documents WHERE id = ?1")?
            .query_row([doc], |r| r.get::<_, i64>(0))
            .optional()?
            .map(from_sql),
    )
}

fn load(
    c: &Connection,
    doc: &str,
    create: bool,
    history: u64,
    now: i64,
) -> Result<Option<StoredDocument>, StoreError> {
    let Some(latest) = stored_version(c, doc)? else {
        if !create {
            return Ok(None);
        }
        c.prepare_cached(
            "INSERT INTO documents (id, version, created_at, updated_at) VALUES (?1, 0, ?2, ?2)",
        )?
        .execute(params![doc, now])?;
        return Ok(Some(StoredDocument {
            snapshot: String::new(),
            snapshot_version: 0,
            log: Vec::new(),
        }));
    };
    // The newest snapshot that leaves a full history window to replay; else the oldest one
    // (history was raised since it was compacted); else the empty text at version 0.
    let newest_old_enough = c
        .prepare_cached(
            "SELECT version, content FROM snapshots WHERE doc = ?1 AND version <= ?2
             ORDER BY version DESC LIMIT 1",
        )?
        .query_row(params![doc, to_sql(latest.saturating_sub(history))], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    let chosen = match newest_old_enough {
        Some(s) => Some(s),
        None => c
            .prepare_cached(
                "SELECT version, content FROM snapshots WHERE doc = ?1 ORDER BY version LIMIT 1",
            )?
            .query_row([doc], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .optional()?,
    };
    let (snapshot_version, snapshot) = chosen.map_or((0, String::new()), |(v, s)| (from_sql(v), s));
    let mut stmt = c.prepare_cached(
        "SELECT version, op, client_id, seq, user_id, at FROM operations
         WHERE doc = ?1 AND version > ?2 ORDER BY version",
    )?;
    let rows = stmt.query_map(params![doc, to_sql(snapshot_version)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut log = Vec::new();
    let mut expected = snapshot_version + 1;
    for row in rows {
        let (version, op, client_id, seq, user_id, at_ms) = row?;
        let version = from_sql(version);
        let corrupt = |message: String| StoreError::Corrupt {
            doc: doc.to_owned(),
            version,
            message,
        };
        if version != expected {
            return Err(corrupt(format!("expected version {expected}")));
        }
        let op: Operation<Chars> = serde_json::from_str(&op).map_err(|e| corrupt(e.to_string()))?;
        log.push(LogEntry {
            revision: Revision {
                version,
                op,
                client_id,
                seq: seq.map(from_sql),
            },
            user_id,
            at_ms,
        });
        expected += 1;
    }
    if expected != latest + 1 {
        return Err(StoreError::Corrupt {
            doc: doc.to_owned(),
            version: expected,
            message: format!("the log ends before the stored version {latest}"),
        });
    }
    Ok(Some(StoredDocument {
        snapshot,
        snapshot_version,
        log,
    }))
}

fn append(c: &Connection, doc: &str, entry: &LogEntry, now: i64) -> Result<(), StoreError> {
    let version = entry.revision.version;
    let updated = c
        .prepare_cached(
            "UPDATE documents SET version = ?2, updated_at = ?3 WHERE id = ?1 AND version = ?2 - 1",
        )?
        .execute(params![doc, to_sql(version), now])?;
    if updated != 1 {
        return Err(match stored_version(c, doc)? {
            Some(stored) => StoreError::Gap {
                doc: doc.to_owned(),
                version,
                stored,
            },
            None => StoreError::Missing(doc.to_owned()),
        });
    }
    let op = serde_json::to_string(&entry.revision.op).map_err(|e| StoreError::Corrupt {
        doc: doc.to_owned(),
        version,
        message: e.to_string(),
    })?;
    c.prepare_cached(
        "INSERT INTO operations (doc, version, op, client_id, seq, user_id, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        doc,
        to_sql(version),
        op,
        entry.revision.client_id,
        entry.revision.seq.map(to_sql),
        entry.user_id,
        entry.at_ms,
    ])?;
    Ok(())
}

fn snapshot(
    c: &Connection,
    doc: &str,
    version: u64,
    content: &str,
    history: u64,
    now: i64,
) -> Result<(), StoreError> {
    match stored_version(c, doc)? {
        None => return Err(StoreError::Missing(doc.to_owned())),
        // Only durable versions are snapshotted (an earlier append failed otherwise).
        Some(stored) if stored < version => {
            return Err(StoreError::Gap {
                doc: doc.to_owned(),
                version,
                stored,
            })
        }
        Some(_) => {}
    }
    c.prepare_cached(
        "INSERT OR REPLACE INTO snapshots (doc, version, content, at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![doc, to_sql(version), content, now])?;
    // Keep the newest snapshot at least `history` old (where a load starts) and what follows.
    if let Some(bound) = version.checked_sub(history) {
        let keep: Option<i64> = c
            .prepare_cached("SELECT max(version) FROM snapshots WHERE doc = ?1 AND version <= ?2")?
            .query_row(params![doc, to_sql(bound)], |r| r.get(0))?;
        if let Some(keep) = keep {
            c.prepare_cached("DELETE FROM snapshots WHERE doc = ?1 AND version < ?2")?
                .execute(params![doc, keep])?;
            c.prepare_cached("DELETE FROM operations WHERE doc = ?1 AND version <= ?2")?
                .execute(params![doc, keep])?;
        }
    }
    Ok(())
}

fn ids(c: &Connection) -> Result<HashSet<String>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT id FROM documents")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let path = std::env::temp_dir()
                .join(format!("shardcast-docstore-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(dir: &Path, history: usize) -> StoreOptions {
        StoreOptions {
            path: dir.join("documents.sqlite3"),
            synchronous: Synchronous::Full,
            queue_capacity: 65_536,
            max_batch: 1_024,
            history,
        }
    }

    fn wait<T>(fut: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(fut)
    }

    fn entry(version: u64, len: usize, text: &str) -> LogEntry {
        LogEntry {
            revision: Revision {
                version,
                op: Operation::insert_at(len, len, text).unwrap(),
                client_id: Some("c".into()),
                seq: Some(version),
            },
            user_id: "u".into(),
            at_ms: 1,
        }
    }

    #[test]
    fn creates_appends_and_reloads() {
        let dir = Dir::new("reload");
        let thread = DocumentStoreThread::start(&config(&dir.0, 10)).unwrap();
        let store = thread.handle();
        assert_eq!(wait(store.load("a", false)).unwrap(), None);
        let empty = wait(store.load("a", true)).unwrap().unwrap();
        assert_eq!((empty.snapshot.as_str(), empty.version()), ("", 0));
        for v in 1..=3 {
            wait(store.append("a", entry(v, v as usize - 1, "x"))).unwrap();
        }
        // Not contiguous: refused, and nothing is written.
        assert!(matches!(
            wait(store.append("a", entry(5, 4, "x"))),
            Err(StoreError::Gap {
                version: 5,
                stored: 3,
                ..
            })
        ));
        assert!(matches!(
            wait(store.append("b", entry(1, 0, "x"))),
            Err(StoreError::Missing(_))
        ));
        assert_eq!(
            thread.document_ids_blocking().unwrap(),
            HashSet::from(["a".to_string()])
        );
        thread.stop().unwrap();

        let thread = DocumentStoreThread::start(&config(&dir.0, 10)).unwrap();
        let loaded = wait(thread.handle().load("a", false)).unwrap().unwrap();
        assert_eq!(loaded.version(), 3);
        assert_eq!(loaded.log.len(), 3);
        assert_eq!(loaded.log[2], entry(3, 2, "x"));
    }

    #[test]
    fn snapshots_compact_but_keep_a_history_window() {
        let dir = Dir::new("compact");
        let thread = DocumentStoreThread::start(&config(&dir.0, 4)).unwrap();
        let store = thread.handle();
        wait(store.load("d", true)).unwrap();
        let mut text = String::new();
        for v in 1..=20u64 {
            let e = entry(v, text.chars().count(), "ab");
            text = e.revision.op.apply_str(&text).unwrap();
            wait(store.append("d", e)).unwrap();
            if v % 3 == 0 {
                wait(store.snapshot("d", v, Rope::from_str(&text))).unwrap();
            }
        }
        // A snapshot of a version that is not durable is refused.
        assert!(wait(store.snapshot("d", 21, Rope::new())).is_err());
        let loaded = wait(store.load("d", false)).unwrap().unwrap();
        // Snapshots at 3, 6, ..., 18; the newest at least 4 old is 15, so the load starts there
        // and replays 16..=20, a full history window.
        assert_eq!(loaded.snapshot_version, 15);
        assert_eq!(loaded.log.len(), 5);
        assert_eq!(loaded.version(), 20);
        let mut replayed = loaded.snapshot.clone();
        for e in &loaded.log {
            replayed = e.revision.op.apply_str(&replayed).unwrap();
        }
        assert_eq!(replayed, text);
        // Compaction at the snapshot of 18 kept snapshot 12 (the newest <= 14) and what follows.
        let conn = Connection::open(config(&dir.0, 4).path).unwrap();
        let oldest_op: i64 = conn
            .query_row("SELECT min(version) FROM operations", [], |r| r.get(0))
            .unwrap();
        let snapshots: i64 = conn
            .query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))
            .unwrap();
        assert_eq!((oldest_op, snapshots), (13, 3));
    }
}
