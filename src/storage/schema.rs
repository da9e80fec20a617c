//! The rooms store's schema, versioned with `PRAGMA user_version` (applied by
//! [`super::worker::SqliteThread`]).

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

/// The migrations, in order (see [`super::worker::Database::migrations`]).
pub const MIGRATIONS: &[&str] = &[V1];
