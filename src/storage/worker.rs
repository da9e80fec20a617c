//! The batching loop every SQLite thread runs: wait for a request, take whatever else is queued
//! (up to `max_batch`), run them all in one transaction (each in its own savepoint, inside
//! `Job::execute`), commit once, then answer each asker with its result or the commit error.
//! At shutdown it answers what was queued first and checkpoints the WAL.

use rusqlite::{Connection, Transaction};

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
}

/// Serves `rx` until a shutdown request or until every sender is gone.
pub fn serve<J: Job>(
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
