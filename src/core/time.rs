//! Time as the core sees it: handed in by the caller, never read from a clock here.

use std::time::{Duration, Instant};

/// The time of the event being handled: a monotonic instant for deadlines and intervals, and
/// wall-clock milliseconds for what is stored or shown. The runtime reads the clocks once per
/// event; the [`testing`](super::testing) harness advances a virtual clock instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

impl Now {
    /// This time plus `d` on both clocks (virtual time).
    pub fn advanced(self, d: Duration) -> Now {
        Now {
            instant: self.instant + d,
            unix_ms: self.unix_ms + d.as_millis() as i64,
        }
    }
}
