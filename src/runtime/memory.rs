//! Giving memory back to the system after connection storms.
//!
//! A storm of connections leaves the allocator holding the pages of what the sessions used
//! while they were busy (task futures, handshake buffers) after they park or close: memory the
//! process keeps resident but no longer uses. The binary, which chose the allocator, registers
//! how to hand such pages back ([`set_release`]); each shard's releaser task calls it once
//! enough sessions have parked or ended since the last time, and at most once a second.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Sessions parked or ended on a shard before its freed memory is handed back.
const RELEASE_AFTER_SESSIONS: usize = 1024;
/// Shortest time between two releases on a shard.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

static RELEASE: OnceLock<fn()> = OnceLock::new();

thread_local! {
    static FREED: Cell<usize> = const { Cell::new(0) };
    static LAST_RELEASE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Registers how the process's allocator gives the calling thread's free pages back (e.g.
/// mimalloc's `mi_collect`). Without one, nothing is released. The first registration wins.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// A session on this shard parked for the first time or ended: what it used while busy
/// (handshake, first join) is free now.
pub(crate) fn session_freed() {
    FREED.with(|f| f.set(f.get() + 1));
}

/// Hands freed memory back if enough sessions freed theirs since the last time and the last
/// release was at least a second before `now`. Returns whether it did.
pub(crate) fn maybe_release(now: Instant) -> bool {
    let due = FREED.with(Cell::get) >= RELEASE_AFTER_SESSIONS
        && LAST_RELEASE
            .with(Cell::get)
            .is_none_or(|last| now.saturating_duration_since(last) >= RELEASE_INTERVAL);
    if !due {
        return false;
    }
    FREED.with(|f| f.set(0));
    LAST_RELEASE.with(|l| l.set(Some(now)));
    if let Some(release) = RELEASE.get() {
        release();
    }
    true
}

/// The shard's releaser task: looks once a second whether freed memory is due to go back.
pub(crate) async fn run_releaser() {
    loop {
        glommio::timer::sleep(RELEASE_INTERVAL).await;
        maybe_release(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_after_enough_sessions_and_at_most_once_a_second() {
        let start = Instant::now();
        assert!(!maybe_release(start), "nothing freed yet");
        for _ in 0..RELEASE_AFTER_SESSIONS - 1 {
            session_freed();
        }
        assert!(!maybe_release(start), "one session short");
        session_freed();
        assert!(maybe_release(start));
        for _ in 0..RELEASE_AFTER_SESSIONS {
            session_freed();
        }
        assert!(
            !maybe_release(start + Duration::from_millis(999)),
            "too soon"
        );
        assert!(maybe_release(start + RELEASE_INTERVAL));
    }
}
