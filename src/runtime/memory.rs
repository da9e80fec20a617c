//! Giving memory back to the system after connection storms.
//!
//! A storm of connections leaves the allocator holding the pages of what the sessions used
//! while they were busy (task futures, handshake buffers) after they park or close: memory the
//! process keeps resident but no longer uses. The binary, which chose the allocator, registers
//! how to hand such pages back ([`set_release`]); each shard's releaser task calls it once
//! enough sessions have parked or ended since the last time, or once a smaller storm is over
//! (sessions were freed, then none for a whole interval), and at most once a second.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Sessions parked or ended on a shard before its freed memory is handed back.
const RELEASE_AFTER_SESSIONS: usize = 1024;
/// Sessions freed, then none for an interval: the tail of a storm, released too (without it the
/// last < 1,024 sessions of a storm kept their pages for good). Fewer, sporadic closes are not
/// worth a collection.
const RELEASE_AFTER_QUIET_SESSIONS: usize = 64;
/// Shortest time between two releases on a shard.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

static RELEASE: OnceLock<fn()> = OnceLock::new();

thread_local! {
    static FREED: Cell<usize> = const { Cell::new(0) };
    /// `FREED` at the previous check: unchanged since then means the shard was quiet.
    static FREED_AT_LAST_CHECK: Cell<usize> = const { Cell::new(0) };
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

/// Hands freed memory back if enough sessions freed theirs since the last time (or some did and
/// none since the previous check), and the last release was at least a second before `now`.
/// Returns whether it did. Checked about once an interval.
pub(crate) fn maybe_release(now: Instant) -> bool {
    let freed = FREED.with(Cell::get);
    let quiet = FREED_AT_LAST_CHECK.with(|c| c.replace(freed)) == freed;
    let enough =
        freed >= RELEASE_AFTER_SESSIONS || (quiet && freed >= RELEASE_AFTER_QUIET_SESSIONS);
    let due = enough
        && LAST_RELEASE
            .with(Cell::get)
            .is_none_or(|last| now.saturating_duration_since(last) >= RELEASE_INTERVAL);
    if !due {
        return false;
    }
    FREED.with(|f| f.set(0));
    FREED_AT_LAST_CHECK.with(|c| c.set(0));
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

    #[test]
    fn the_tail_of_a_storm_is_released_once_the_shard_is_quiet() {
        let start = Instant::now();
        let tick = |n: u32| start + RELEASE_INTERVAL * n;
        for _ in 0..RELEASE_AFTER_QUIET_SESSIONS - 1 {
            session_freed();
        }
        assert!(!maybe_release(tick(0)));
        assert!(!maybe_release(tick(1)), "quiet, but too few to be worth it");
        for _ in 0..100 {
            session_freed();
        }
        assert!(!maybe_release(tick(2)), "sessions still being freed");
        assert!(
            maybe_release(tick(3)),
            "none since the last check: the storm is over"
        );
        assert!(!maybe_release(tick(4)), "nothing freed since");
        session_freed();
        assert!(!maybe_release(tick(5)));
        assert!(
            !maybe_release(tick(6)),
            "one sporadic close is not worth a collection"
        );
    }
}
