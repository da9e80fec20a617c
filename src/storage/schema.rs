//! Connection settings and the schema, versioned with `PRAGMA user_version`.

use super::StorageError;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// The schema version this build writes.
pub const VERSION: i64 = 1;

const V1: &str = "
CREATE TABLE rooms (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,          -- unix milliseconds
    message_count   INTEGER NOT NULL DEFAULT 0,
    last_message_at INTEGER
);
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- unique, never reused, increasing
    room_id     INTEGER NOT NULL REFERENCES rooms (id),
    user_id     TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    body        TEXT NOT NULL,
    inserted_at INTEGER NOT NULL                    -- unix milliseconds
);
CREATE INDEX messages_by_room ON messages (room_id, id);
CREATE TABLE user_sessions (
    user_id                TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    last_activity_at       INTEGER NOT NULL,
    last_disconnect_at     INTEGER,
    last_disconnect_reason TEXT
);
";

/// Sets WAL mode and `synchronous`, then creates or checks the schema.
pub fn prepare(conn: &mut Connection, path: &Path, synchronous: &str) -> Result<(), StorageError> {
    let open_err = |source| StorageError::Open {
        path: path.to_owned(),
        source,
    };
    match setup(conn, synchronous).map_err(open_err)? {
        0 => {
            let tx = conn.transaction().map_err(open_err)?;
            tx.execute_batch(V1).map_err(open_err)?;
            tx.execute_batch(&format!("PRAGMA user_version = {VERSION}"))
                .map_err(open_err)?;
            tx.commit().map_err(open_err)
        }
        VERSION => Ok(()),
        found => Err(StorageError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: VERSION,
        }),
    }
}

/// Connection settings; returns the schema version found.
fn setup(conn: &mut Connection, synchronous: &str) -> Result<i64, rusqlite::Error> {
    // Someone inspecting the file with the sqlite3 shell must not make writes fail at once.
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "database is not in WAL mode");
    }
    let sync = if synchronous == "normal" {
        "NORMAL"
    } else {
        "FULL"
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
    ))?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}
