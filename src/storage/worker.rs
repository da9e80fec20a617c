//! The batching loop every SQLite thread runs: wait for a request, take whatever else is queued
//! (up to `max_batch`), run them all in one transaction (each in its own savepoint, inside
//! `Job::execute`), commit once, then answer each asker with its result or the commit error.
//! At shutdown it answers what was queued first and checkpoints the WAL.
//!
//! [`SqliteThread`] is the one thread type both stores (rooms, documents) run: it creates the
//! directory, opens the database, sets the pragmas (WAL, `synchronous`, busy timeout), applies
//! the schema migrations (`PRAGMA user_version`), starts this loop and stops it.

use super::config::Synchronous;
use rusqlite::{Connection, Transaction};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// An answer held until the batch's commit is known.
pub type Deferred = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;

/// One request to a storage thread.
pub trait Job: Send + 'static {
    /// Read-only settings every request of this thread sees.
    type Ctx;

    /// The request that ends the thread (after the batch it arrived in).
    fn is_shutdown(&self) -> bool;

    /// Runs inside the batch's transaction; returns the answer to send once the commit is known.
    fn execute(self, tx: &mut Transaction<'_>, ctx: &Self::Ctx) -> Deferred;

    /// Answers with `e` without running (the transaction could not begin).
    fn fail(self, e: &rusqlite::Error);

    /// The request that asks the thread to stop.
    fn shutdown() -> Self;
}

/// How a store's database is set up.
pub struct Database<'a> {
    /// Names the thread and its log lines.
    pub name: &'static str,
    /// The SQLite file.
    pub path: PathBuf,
    /// Commit durability.
    pub synchronous: Synchronous,
    /// Migrations in order: applying `migrations[v]` takes the schema from version `v` to
    /// `v + 1` (kept in `PRAGMA user_version`).
    pub migrations: &'a [&'a str],
}

/// Why a store could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened, configured or migrated.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// Written by a newer build.
    #[error("database {path} has schema version {found}; this build supports up to {supported}")]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// This build's.
        supported: i64,
    },
    /// The thread could not be spawned.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// The store.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A running SQLite thread serving requests of type `J`.
pub struct SqliteThread<J: Job> {
    name: &'static str,
    tx: flume::Sender<J>,
    join: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl<J: Job> SqliteThread<J> {
    /// Opens (creating and migrating) `db` and starts serving the receiving half of `queue`.
    pub fn start(
        db: Database<'_>,
        queue: (flume::Sender<J>, flume::Receiver<J>),
        max_batch: usize,
        ctx: J::Ctx,
    ) -> Result<SqliteThread<J>, OpenError>
    where
        J::Ctx: Send + 'static,
    {
        let path = db.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut conn = Connection::open(&path).map_err(|source| OpenError::Open {
            path: path.clone(),
            source,
        })?;
        prepare(&mut conn, &db)?;
        let (tx, rx) = queue;
        let name = db.name;
        let join = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(name, conn, rx, max_batch, ctx))
            .map_err(|source| OpenError::Spawn { name, source })?;
        tracing::info!(store = name, path = %path.display(), "started");
        Ok(SqliteThread {
            name,
            tx,
            join: Some(join),
            path,
        })
    }

    /// Where requests go.
    pub fn sender(&self) -> &flume::Sender<J> {
        &self.tx
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers everything queued before this call, checkpoints the WAL and ends the thread.
    /// `false` if the thread had panicked.
    pub fn stop(mut self) -> bool {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> bool {
        let Some(join) = self.join.take() else {
            return true;
        };
        let _ = self.tx.send(J::shutdown());
        join.join().is_ok()
    }
}

impl<J: Job> Drop for SqliteThread<J> {
    fn drop(&mut self) {
        if !self.stop_inner() {
            tracing::error!(store = self.name, "storage thread did not stop cleanly");
        }
    }
}

/// Sets WAL mode, `synchronous` and a busy timeout, then applies the missing migrations.
fn prepare(conn: &mut Connection, db: &Database<'_>) -> Result<(), OpenError> {
    let open_err = |source| OpenError::Open {
        path: db.path.clone(),
        source,
    };
    // Someone inspecting the file with the sqlite3 shell must not make writes fail at once.
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(store = db.name, mode, "database is not in WAL mode");
    }
    let sync = match db.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(open_err)?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    let supported = db.migrations.len() as i64;
    if found > supported {
        return Err(OpenError::SchemaTooNew {
            path: db.path.clone(),
            found,
            supported,
        });
    }
    for (version, migration) in db.migrations.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(open_err)?;
        tx.execute_batch(migration).map_err(open_err)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))
            .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
    }
    Ok(())
}

/// Serves `rx` until a shutdown request or until every sender is gone.
fn serve<J: Job>(
    name: &str,
    mut conn: Connection,
    rx: flume::Receiver<J>,
    max_batch: usize,
    ctx: J::Ctx,
) {
    let mut batch = Vec::with_capacity(max_batch.min(1024));
    let mut stopping = false;
    while !stopping {
        match rx.recv() {
            Ok(first) => batch.push(first),
            Err(_) => break,
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        stopping = run_batch(name, &mut conn, &mut batch, &ctx);
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(store = name, error = %e, "WAL checkpoint at shutdown failed");
    }
    tracing::debug!(store = name, "stopped");
}

/// Runs `batch` in one transaction; returns true when it held a shutdown request.
fn run_batch<J: Job>(name: &str, conn: &mut Connection, batch: &mut Vec<J>, ctx: &J::Ctx) -> bool {
    let mut stopping = false;
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(store = name, error = %e, "cannot begin a transaction");
            for job in batch.drain(..) {
                if job.is_shutdown() {
                    stopping = true;
                } else {
                    job.fail(&e);
                }
            }
            return stopping;
        }
    };
    let mut answers: Vec<Deferred> = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        if job.is_shutdown() {
            stopping = true;
        } else {
            answers.push(job.execute(&mut tx, ctx));
        }
    }
    let commit = tx.commit();
    if let Err(e) = &commit {
        tracing::error!(store = name, error = %e, "commit failed");
    }
    let commit_error = commit.err();
    for answer in answers {
        answer(commit_error.as_ref());
    }
    stopping
}

/// Wall-clock milliseconds, for the rows a storage thread stamps as it commits them.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
