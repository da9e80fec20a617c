//! The pace at which one connection's presence changes (typing, status, cursor) reach its
//! topic: at most one forward per interval, the latest value winning. A client toggling
//! `typing` 3,000 times in one write makes one or two diffs, not 3,000 broadcasts to every
//! member. The channel keeps the pending values; this decides *when* they go.

use std::time::{Duration, Instant};

/// When a change offered now is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Forward now.
    Now,
    /// Arm a timer for this long; forward when it fires ([`Throttle::fired`]).
    Later(Duration),
    /// A timer is armed already: the pending value is forwarded when it fires.
    Pending,
}

/// One connection's presence pace.
#[derive(Debug, Default, Clone)]
pub struct Throttle {
    last_forward: Option<Instant>,
    armed: bool,
}

impl Throttle {
    /// A change happened at `now`.
    pub fn offer(&mut self, now: Instant, interval: Duration) -> Pace {
        if self.armed {
            return Pace::Pending;
        }
        let since = self
            .last_forward
            .map_or(interval, |t| now.saturating_duration_since(t));
        if since >= interval {
            self.last_forward = Some(now);
            Pace::Now
        } else {
            self.armed = true;
            Pace::Later(interval - since)
        }
    }

    /// The timer armed by [`Pace::Later`] fired at `now`: forward what is pending.
    pub fn fired(&mut self, now: Instant) {
        self.armed = false;
        self.last_forward = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_makes_one_forward_now_and_one_later() {
        let (t0, interval) = (Instant::now(), Duration::from_millis(100));
        let mut throttle = Throttle::default();
        assert_eq!(throttle.offer(t0, interval), Pace::Now);
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(
            throttle.offer(t1, interval),
            Pace::Later(Duration::from_millis(90))
        );
        for i in 0..3000 {
            assert_eq!(
                throttle.offer(t1 + Duration::from_micros(i), interval),
                Pace::Pending
            );
        }
        throttle.fired(t0 + interval);
        assert_eq!(
            throttle.offer(t0 + interval + Duration::from_millis(1), interval),
            Pace::Later(Duration::from_millis(99))
        );
    }

    proptest! {
        /// Forwards are at least an interval apart, and every change is covered by a forward at
        /// or after it (nothing offered is left unsent).
        #[test]
        fn paced_and_nothing_left_behind(gaps in proptest::collection::vec(0u64..300, 1..200)) {
            let interval = Duration::from_millis(100);
            let t0 = Instant::now();
            let mut throttle = Throttle::default();
            let mut forwards: Vec<Instant> = Vec::new();
            let mut timer: Option<Instant> = None;
            let mut now = t0;
            let mut last_offer = t0;
            for gap in gaps {
                now += Duration::from_millis(gap);
                if let Some(at) = timer.filter(|&at| at <= now) {
                    throttle.fired(at);
                    forwards.push(at);
                    timer = None;
                }
                last_offer = now;
                match throttle.offer(now, interval) {
                    Pace::Now => forwards.push(now),
                    Pace::Later(d) => {
                        prop_assert!(timer.is_none());
                        timer = Some(now + d);
                    }
                    Pace::Pending => prop_assert!(timer.is_some()),
                }
            }
            if let Some(at) = timer {
                forwards.push(at);
            }
            for pair in forwards.windows(2) {
                prop_assert!(pair[1] - pair[0] >= interval);
            }
            prop_assert!(*forwards.last().unwrap() >= last_offer);
        }
    }
}
