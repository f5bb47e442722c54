//! Failed-login limiting: after `max` failures within `window` for one key (an account
//! name or a client address), further attempts for that key are refused without
//! checking the secret until the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked before idle ones are pruned.
const PRUNE_AT: usize = 10_000;

/// Counts failures per key in a sliding window.
pub struct FailureLimiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(max: usize, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` is currently locked out.
    pub fn is_blocked(&self, key: &str, now: Instant) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(key) {
            Some(q) => {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                q.len() >= self.max
            }
            None => false,
        }
    }

    /// Records one failure for `key`.
    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PRUNE_AT {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = map.entry(key.to_owned()).or_default();
        q.push_back(now);
        while q.len() > self.max {
            q.pop_front();
        }
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn clear(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_and_recovers() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(!l.is_blocked("alice", t0), "{i}");
            l.record_failure("alice", t0);
        }
        assert!(l.is_blocked("alice", t0));
        assert!(!l.is_blocked("bob", t0));
        assert!(!l.is_blocked("alice", t0 + Duration::from_secs(61)));
        l.record_failure("bob", t0);
        l.clear("bob");
        assert!(!l.is_blocked("bob", t0));
    }
}
