//! How long to wait between attempts at an engine call, and when to stop trying.
//!
//! The engine may be restarting (even after `kill -9`): the runner keeps its work and retries
//! with exponential backoff instead of failing the stage, up to a total budget per call.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The retry state of one call: created at its first failure, asked for each next delay.
#[derive(Debug)]
pub struct Backoff {
    started: Instant,
    give_up_after: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(give_up_after: Duration) -> Backoff {
        Backoff::starting_at(Instant::now(), give_up_after)
    }

    pub fn starting_at(started: Instant, give_up_after: Duration) -> Backoff {
        Backoff {
            started,
            give_up_after,
            next: FIRST_DELAY,
        }
    }

    /// The delay before the next attempt, or `None` once the budget is spent. The last delay is
    /// shortened so one final attempt lands right at the deadline.
    pub fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        let spent = now.saturating_duration_since(self.started);
        let left = self.give_up_after.checked_sub(spent)?;
        if left.is_zero() {
            return None;
        }
        let delay = jittered(self.next).min(left);
        self.next = (self.next * 2).min(MAX_DELAY);
        Some(delay)
    }

    /// How long this call has been failing.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// Between 75% and 100% of `delay`, so runners cut off by the same engine restart do not all
/// reconnect in the same millisecond. `RandomState` is random per instance: no extra crate.
fn jittered(delay: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let quarter = delay / 4;
    let nanos = u64::try_from(quarter.as_nanos()).unwrap_or(u64::MAX).max(1);
    delay - quarter + Duration::from_nanos(random % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap() {
        let start = Instant::now();
        let mut backoff = Backoff::starting_at(start, Duration::from_secs(3600));
        let delays: Vec<Duration> = (0..10)
            .map(|_| backoff.next_delay(start).expect("budget left"))
            .collect();
        assert!(delays[0] <= FIRST_DELAY && delays[0] >= FIRST_DELAY * 3 / 4);
        assert!(delays[1] > FIRST_DELAY);
        for d in &delays {
            assert!(*d <= MAX_DELAY);
        }
        assert!(delays[9] >= MAX_DELAY * 3 / 4);
    }

    #[test]
    fn gives_up_once_the_budget_is_spent() {
        let start = Instant::now();
        let mut backoff = Backoff::starting_at(start, Duration::from_secs(2));
        let near_end = start + Duration::from_millis(1950);
        let last = backoff.next_delay(near_end).expect("50 ms left");
        assert!(last <= Duration::from_millis(50));
        assert_eq!(backoff.next_delay(start + Duration::from_secs(2)), None);
        assert_eq!(backoff.next_delay(start + Duration::from_secs(3)), None);
    }
}
