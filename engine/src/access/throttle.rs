//! Backoff for failed sign-ins, per user name and per client address: after a few failures in
//! a row, each further attempt must wait, twice as long each time, up to a quarter of an hour.
//! A throttled attempt is refused before the password is checked (so guessing is slowed, not
//! just answered slowly); a successful sign-in clears the user's count. Kept in each engine
//! process's memory: with several engines an attacker gets each one's allowance, no more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before attempts must wait.
const FREE: u32 = 5;
/// The first wait; it doubles with each failure after that.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Entries kept before the old ones are dropped (a bound on memory under a spray of names).
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    /// No attempt before this.
    until: Instant,
}

#[derive(Default)]
pub struct LoginThrottle {
    users: Mutex<HashMap<String, Failures>>,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// How long `user` from `address` must still wait before trying again, if at all.
    pub fn wait(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let by_user = lock(&self.users).get(user).map(|f| f.until);
        let by_address = address.and_then(|a| lock(&self.addresses).get(&a).map(|f| f.until));
        [by_user, by_address]
            .into_iter()
            .flatten()
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    pub fn failed(&self, user: &str, address: Option<IpAddr>, now: Instant) {
        record(&mut lock(&self.users), user.to_owned(), now);
        if let Some(address) = address {
            record(&mut lock(&self.addresses), address, now);
        }
    }

    pub fn succeeded(&self, user: &str) {
        lock(&self.users).remove(user);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn record<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Failures>, key: K, now: Instant) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, f| f.until > now);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    let entry = map.entry(key).or_insert(Failures {
        count: 0,
        until: now,
    });
    entry.count += 1;
    if entry.count >= FREE {
        let doublings = (entry.count - FREE).min(20);
        let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
        entry.until = now + wait;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_a_few_failures_and_double() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..FREE - 1 {
            t.failed("alice", Some(ip), now);
            assert_eq!(t.wait("alice", Some(ip), now), None);
        }
        t.failed("alice", Some(ip), now);
        assert_eq!(t.wait("alice", Some(ip), now), Some(Duration::from_secs(1)));
        t.failed("alice", Some(ip), now);
        assert_eq!(t.wait("alice", Some(ip), now), Some(Duration::from_secs(2)));
        // Another address for the same user waits too; another user from the address too.
        assert!(t.wait("alice", None, now).is_some());
        assert!(t.wait("bob", Some(ip), now).is_some());
        assert_eq!(t.wait("bob", Some([10, 0, 0, 2].into()), now), None);
        t.succeeded("alice");
        assert_eq!(t.wait("alice", None, now), None);
        assert!(
            t.wait("alice", Some(ip), now).is_some(),
            "the address still waits"
        );
        for _ in 0..40 {
            t.failed("carol", None, now);
        }
        assert_eq!(t.wait("carol", None, now), Some(MAX_WAIT));
    }
}
