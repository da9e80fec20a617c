//! Embedded persistence: SQLite (WAL mode) on its own thread.
//!
//! Shards never touch the disk. They call [`Storage`] methods, which put a request on a bounded
//! flume queue **at the time of the call** (so requests from one owner task reach the database
//! in the order they were made) and return a future that resolves when the storage thread has
//! answered. The thread drains whatever is queued (up to `storage.max_batch`), runs it in one
//! transaction (each request in its own savepoint, so one failure does not undo the others),
//! commits, and only then answers each request: an answered write is committed.
//!
//! A full queue is not waited on: the call fails at once with [`StorageError::Overloaded`], so a
//! burst sheds load at the edge instead of growing queues without bound.

pub mod config;
#[cfg(feature = "documents")]
pub mod documents;
mod schema;
pub mod worker;

pub use config::{StorageConfig, Synchronous};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::future::Future;
use std::path::Path;

/// Storage errors, as the library reports them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store could not start.
    #[error(transparent)]
    Start(#[from] worker::OpenError),
    /// A statement failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The batch holding the request did not commit.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The queue is full: shed at the edge.
    #[error("storage queue is full")]
    Overloaded,
    /// The thread is gone.
    #[error("storage thread is not running")]
    Closed,
}

/// A room's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// The room's row id.
    pub id: i64,
    /// The room's channel topic (`room:<id>`).
    pub topic: String,
    /// When the room was created (first opened), in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Messages stored in the room since it was created.
    pub message_count: i64,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// Unique across the database, increasing in insertion order.
    pub id: i64,
    /// The author's user id.
    pub user_id: String,
    /// The author's display name when they sent it.
    pub user_name: String,
    /// The message text.
    pub body: String,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub inserted_at_ms: i64,
}

/// A room and its latest messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// The room's row.
    pub room: RoomRow,
    /// Its latest messages (at most the `limit` asked for), oldest first.
    pub recent: Vec<MessageRow>,
}

/// Per-user session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The user's id.
    pub user_id: String,
    /// The user's display name, as last recorded by a join or message.
    pub name: String,
    /// Latest activity (join, message or end), in milliseconds since the Unix epoch.
    pub last_activity_ms: i64,
    /// When a channel of the user last ended, in milliseconds since the Unix epoch.
    pub last_disconnect_ms: Option<i64>,
    /// Why the last channel ended (`leave`, `closed`, `rejoined`, `disconnect`, `crashed`).
    pub last_disconnect_reason: Option<String>,
}

type Reply<T> = flume::Sender<Result<T, StorageError>>;

enum Request {
    OpenRoom {
        topic: String,
        limit: usize,
        at_ms: i64,
        reply: Reply<RoomSnapshot>,
    },
    InsertMessage {
        topic: String,
        user_id: String,
        user_name: String,
        body: String,
        at_ms: i64,
        reply: Reply<MessageRow>,
    },
    TouchSession {
        user_id: String,
        name: String,
        at_ms: i64,
        reply: Reply<()>,
    },
    EndSession {
        user_id: String,
        reason: String,
        at_ms: i64,
        reply: Reply<()>,
    },
    GetSession {
        user_id: String,
        reply: Reply<Option<SessionRow>>,
    },
    Shutdown,
}

/// The handle shards use: cheap to clone, `Send`.
#[derive(Clone)]
pub struct Storage {
    tx: flume::Sender<Request>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl Storage {
    /// Enqueues now; the future resolves with the thread's answer.
    fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> impl Future<Output = Result<T, StorageError>> + 'static {
        let (reply, answer) = flume::bounded(1);
        let sent = self.tx.try_send(make(reply)).map_err(|e| match e {
            flume::TrySendError::Full(_) => StorageError::Overloaded,
            flume::TrySendError::Disconnected(_) => StorageError::Closed,
        });
        async move {
            sent?;
            answer
                .recv_async()
                .await
                .map_err(|_| StorageError::Closed)?
        }
    }

    /// The room `topic` (created on first use) and its latest `limit` messages.
    pub fn open_room(
        &self,
        topic: &str,
        limit: usize,
        at_ms: i64,
    ) -> impl Future<Output = Result<RoomSnapshot, StorageError>> + 'static {
        let topic = topic.to_string();
        self.call(move |reply| Request::OpenRoom {
            topic,
            limit,
            at_ms,
            reply,
        })
    }

    /// Appends a message to room `topic` (created on first use). Resolves once committed.
    pub fn insert_message(
        &self,
        topic: &str,
        user_id: &str,
        user_name: &str,
        body: &str,
        at_ms: i64,
    ) -> impl Future<Output = Result<MessageRow, StorageError>> + 'static {
        let (topic, user_id, user_name, body) = (
            topic.to_string(),
            user_id.to_string(),
            user_name.to_string(),
            body.to_string(),
        );
        self.call(move |reply| Request::InsertMessage {
            topic,
            user_id,
            user_name,
            body,
            at_ms,
            reply,
        })
    }

    /// Records activity of a user (a join, a message).
    pub fn touch_session(
        &self,
        user_id: &str,
        name: &str,
        at_ms: i64,
    ) -> impl Future<Output = Result<(), StorageError>> + 'static {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.call(move |reply| Request::TouchSession {
            user_id,
            name,
            at_ms,
            reply,
        })
    }

    /// Records that a user's channel ended, and why.
    pub fn end_session(
        &self,
        user_id: &str,
        reason: &str,
        at_ms: i64,
    ) -> impl Future<Output = Result<(), StorageError>> + 'static {
        let (user_id, reason) = (user_id.to_string(), reason.to_string());
        self.call(move |reply| Request::EndSession {
            user_id,
            reason,
            at_ms,
            reply,
        })
    }

    /// The session state of `user_id`, if it was ever recorded.
    pub fn session(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<SessionRow>, StorageError>> + 'static {
        let user_id = user_id.to_string();
        self.call(move |reply| Request::GetSession { user_id, reply })
    }
}

/// The running storage thread. [`StorageThread::stop`] (or drop) finishes what is queued and
/// joins it.
pub struct StorageThread {
    thread: worker::SqliteThread<Request>,
}

impl StorageThread {
    /// Opens (creating and migrating) the database at `config.database_path(data_dir)` and
    /// starts the thread. Errors opening the database are reported here, not later.
    pub fn start(config: &StorageConfig, data_dir: &Path) -> Result<StorageThread, StorageError> {
        let db = worker::Database {
            name: "storage",
            path: config.database_path(data_dir),
            synchronous: config.synchronous,
            migrations: schema::MIGRATIONS,
        };
        let queue = flume::bounded(config.queue_capacity);
        let thread = worker::SqliteThread::start(db, queue, config.max_batch, ())?;
        Ok(StorageThread { thread })
    }

    /// The handle shards use.
    pub fn handle(&self) -> Storage {
        Storage {
            tx: self.thread.sender().clone(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.thread.path()
    }

    /// Answers everything queued before this call, checkpoints the WAL and ends the thread.
    pub fn stop(self) -> Result<(), StorageError> {
        if self.thread.stop() {
            Ok(())
        } else {
            Err(StorageError::Closed)
        }
    }
}

/// An answer held until the batch's commit.
use worker::Deferred;

fn defer<T: Send + 'static>(reply: Reply<T>, result: Result<T, rusqlite::Error>) -> Deferred {
    Box::new(move |commit_error| {
        let answer = match (commit_error, result) {
            (Some(e), _) => Err(StorageError::Commit(e.to_string())),
            (None, r) => r.map_err(StorageError::Sqlite),
        };
        // The asker may have gone (its connection closed); nothing to do then.
        let _ = reply.send(answer);
    })
}

impl worker::Job for Request {
    type Ctx = ();

    fn shutdown() -> Self {
        Request::Shutdown
    }

    fn is_shutdown(&self) -> bool {
        matches!(self, Request::Shutdown)
    }

    fn execute(self, tx: &mut Transaction<'_>, _: &()) -> Deferred {
        execute(tx, self)
    }

    fn fail(self, e: &rusqlite::Error) {
        let err = || StorageError::Commit(e.to_string());
        match self {
            Request::OpenRoom { reply, .. } => drop(reply.send(Err(err()))),
            Request::InsertMessage { reply, .. } => drop(reply.send(Err(err()))),
            Request::TouchSession { reply, .. } | Request::EndSession { reply, .. } => {
                drop(reply.send(Err(err())))
            }
            Request::GetSession { reply, .. } => drop(reply.send(Err(err()))),
            Request::Shutdown => {}
        }
    }
}

/// Runs one request in a savepoint (rolled back alone if it fails).
fn execute(tx: &mut Transaction<'_>, req: Request) -> Deferred {
    fn in_savepoint<T>(
        tx: &mut Transaction<'_>,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, rusqlite::Error> {
        let sp = tx.savepoint()?;
        let out = f(&sp)?;
        sp.commit()?;
        Ok(out)
    }
    match req {
        Request::OpenRoom {
            topic,
            limit,
            at_ms,
            reply,
        } => defer(
            reply,
            in_savepoint(tx, |c| {
                let room = ensure_room(c, &topic, at_ms)?;
                let recent = recent_messages(c, room.id, limit)?;
                Ok(RoomSnapshot { room, recent })
            }),
        ),
        Request::InsertMessage {
            topic,
            user_id,
            user_name,
            body,
            at_ms,
            reply,
        } => defer(
            reply,
            in_savepoint(tx, |c| {
                let room = ensure_room(c, &topic, at_ms)?;
                c.prepare_cached(
                    "INSERT INTO messages (room_id, user_id, user_name, body, inserted_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![room.id, user_id, user_name, body, at_ms])?;
                let id = c.last_insert_rowid();
                c.prepare_cached(
                    "UPDATE rooms SET message_count = message_count + 1, last_message_at = ?2
                     WHERE id = ?1",
                )?
                .execute(params![room.id, at_ms])?;
                Ok(MessageRow {
                    id,
                    user_id,
                    user_name,
                    body,
                    inserted_at_ms: at_ms,
                })
            }),
        ),
        Request::TouchSession {
            user_id,
            name,
            at_ms,
            reply,
        } => defer(
            reply,
            in_savepoint(tx, |c| {
                c.prepare_cached(
                    "INSERT INTO user_sessions (user_id, name, last_activity_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id) DO UPDATE
                     SET name = excluded.name,
                         last_activity_at = max(last_activity_at, excluded.last_activity_at)",
                )?
                .execute(params![user_id, name, at_ms])?;
                Ok(())
            }),
        ),
        Request::EndSession {
            user_id,
            reason,
            at_ms,
            reply,
        } => defer(
            reply,
            in_savepoint(tx, |c| {
                c.prepare_cached(
                    "UPDATE user_sessions
                     SET last_disconnect_at = ?2, last_disconnect_reason = ?3,
                         last_activity_at = max(last_activity_at, ?2)
                     WHERE user_id = ?1",
                )?
                .execute(params![user_id, at_ms, reason])?;
                Ok(())
            }),
        ),
        Request::GetSession { user_id, reply } => defer(
            reply,
            in_savepoint(tx, |c| {
                c.prepare_cached(
                    "SELECT user_id, name, last_activity_at, last_disconnect_at,
                            last_disconnect_reason
                     FROM user_sessions WHERE user_id = ?1",
                )?
                .query_row(params![user_id], |r| {
                    Ok(SessionRow {
                        user_id: r.get(0)?,
                        name: r.get(1)?,
                        last_activity_ms: r.get(2)?,
                        last_disconnect_ms: r.get(3)?,
                        last_disconnect_reason: r.get(4)?,
                    })
                })
                .optional()
            }),
        ),
        Request::Shutdown => unreachable!("handled by the batch loop"),
    }
}

fn ensure_room(c: &Connection, topic: &str, at_ms: i64) -> Result<RoomRow, rusqlite::Error> {
    c.prepare_cached(
        "INSERT INTO rooms (topic, created_at) VALUES (?1, ?2) ON CONFLICT (topic) DO NOTHING",
    )?
    .execute(params![topic, at_ms])?;
    c.prepare_cached("SELECT id, topic, created_at, message_count FROM rooms WHERE topic = ?1")?
        .query_row(params![topic], |r| {
            Ok(RoomRow {
                id: r.get(0)?,
                topic: r.get(1)?,
                created_at_ms: r.get(2)?,
                message_count: r.get(3)?,
            })
        })
}

fn recent_messages(
    c: &Connection,
    room_id: i64,
    limit: usize,
) -> Result<Vec<MessageRow>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT id, user_id, user_name, body, inserted_at FROM messages
         WHERE room_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![room_id, limit as i64], |r| {
        Ok(MessageRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
            user_name: r.get(2)?,
            body: r.get(3)?,
            inserted_at_ms: r.get(4)?,
        })
    })?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config() -> StorageConfig {
        StorageConfig::default()
    }

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("shardcast-storage-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn block<T>(f: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn messages_persist_in_order_across_restarts() {
        let d = dir("persist");
        let t = StorageThread::start(&config(), &d).unwrap();
        let s = t.handle();
        // Issued together: one batch, answered after one commit, ids in call order.
        let futs: Vec<_> = (0..60)
            .map(|i| s.insert_message("room:a", "u1", "Ada", &format!("m{i}"), 1_000 + i))
            .collect();
        let other = s.insert_message("room:b", "u2", "Bo", "elsewhere", 5);
        let ids: Vec<i64> = futs.into_iter().map(|f| block(f).unwrap().id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        block(other).unwrap();
        t.stop().unwrap();

        let t = StorageThread::start(&config(), &d).unwrap();
        let snap = block(t.handle().open_room("room:a", 50, 9)).unwrap();
        assert_eq!(snap.room.message_count, 60);
        assert_eq!(snap.recent.len(), 50);
        assert_eq!(snap.recent.first().unwrap().body, "m10");
        assert_eq!(snap.recent.last().unwrap().body, "m59");
        assert_eq!(snap.recent.last().unwrap().id, *ids.last().unwrap());
        let empty = block(t.handle().open_room("room:new", 50, 9)).unwrap();
        assert!(empty.recent.is_empty());
        assert_eq!(empty.room.created_at_ms, 9);
        t.stop().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sessions_record_activity_and_disconnects() {
        let d = dir("sessions");
        let t = StorageThread::start(&config(), &d).unwrap();
        let s = t.handle();
        assert_eq!(block(s.session("u1")).unwrap(), None);
        block(s.touch_session("u1", "Ada", 100)).unwrap();
        block(s.touch_session("u1", "Ada L.", 50)).unwrap();
        block(s.end_session("u1", "disconnect", 200)).unwrap();
        let row = block(s.session("u1")).unwrap().unwrap();
        assert_eq!(row.name, "Ada L.");
        assert_eq!(row.last_activity_ms, 200);
        assert_eq!(row.last_disconnect_ms, Some(200));
        assert_eq!(row.last_disconnect_reason.as_deref(), Some("disconnect"));
        drop(t);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_full_queue_sheds_and_a_stopped_thread_answers_closed() {
        let d = dir("full");
        let mut c = config();
        c.queue_capacity = 1;
        let t = StorageThread::start(&c, &d).unwrap();
        let s = t.handle();
        // Far more calls than the queue holds, without awaiting: some are refused at once.
        let futs: Vec<_> = (0..2_000)
            .map(|i| s.touch_session(&format!("u{i}"), "x", i))
            .collect();
        let results: Vec<_> = futs.into_iter().map(block).collect();
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(StorageError::Overloaded))));
        assert!(results.iter().any(Result::is_ok));
        t.stop().unwrap();
        assert!(matches!(
            block(s.touch_session("u", "x", 1)),
            Err(StorageError::Closed)
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn open_errors_are_reported_at_start() {
        let d = dir("bad");
        std::fs::create_dir_all(d.join("shardcast.db")).unwrap();
        assert!(matches!(
            StorageThread::start(&config(), &d),
            Err(StorageError::Start(worker::OpenError::Open { .. }))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
