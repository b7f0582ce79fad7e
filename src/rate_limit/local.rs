//! The limiter each instance keeps in memory for the policies that go on while Redis is away:
//! `governor`'s GCRA at the policy's quota over the instances, one per policy.
//!
//! Its memory is bounded whatever the keys: a client rotating addresses makes a new key per
//! request, and an outage is exactly when nobody is watching. Keys whose allowance is whole
//! again are forgotten by a sweep (at most once every [`SWEEP_EVERY`] checks, once there are
//! more than [`SWEEP_AT`] of them: a sweep walks the whole map); and past [`MAX_KEYS`], a key
//! the limiter does not know yet shares one overflow allowance with every other such key, so
//! the map stops growing. The overflow makes new clients wait on one another until a sweep
//! makes room; the clients already known keep their own allowances.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};

use super::Decision;
use crate::config::rate_limits::PolicyLimit;

/// Past this many keys, a sweep forgets those whose allowance is whole again.
pub const SWEEP_AT: usize = 10_000;
/// A sweep is tried at most once every this many checks.
pub const SWEEP_EVERY: u64 = 1_024;
/// The most keys one policy's limiter holds (about 100 bytes each).
pub const MAX_KEYS: usize = 100_000;
/// The key every new client shares past [`MAX_KEYS`] (real keys start `a:` or `u:`).
const OVERFLOW: &str = "overflow";

/// A map of keys to their state that stops taking new keys at its cap: past it, an unknown key
/// is counted under [`OVERFLOW`].
#[derive(Debug)]
struct Capped {
    map: DashMapStateStore<String>,
    cap: usize,
}

impl StateStore for Capped {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if self.map.len() >= self.cap && !self.map.contains_key(key) {
            return self.map.measure_and_replace(&OVERFLOW.to_owned(), f);
        }
        self.map.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for Capped {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One policy's local limiter.
pub struct Local {
    limiter: RateLimiter<String, Capped, DefaultClock, StateInformationMiddleware>,
    /// The quota applied: the policy's share per instance.
    pub share: u64,
    checks: AtomicU64,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("share", &self.share)
            .field("keys", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl Local {
    pub fn new(limit: PolicyLimit, instances: u32) -> Self {
        Self::with_cap(limit, instances, MAX_KEYS)
    }

    fn with_cap(limit: PolicyLimit, instances: u32, cap: usize) -> Self {
        let (quota, share) = local_quota(limit, instances);
        let store = Capped {
            map: DashMapStateStore::default(),
            cap,
        };
        Self {
            limiter: RateLimiter::<String, Capped, DefaultClock, NoOpMiddleware<_>>::new(
                quota,
                store,
                DefaultClock::default(),
            )
            .with_middleware(),
            share,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `subject`.
    pub fn check(&self, subject: &str) -> Decision {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(SWEEP_EVERY) && self.limiter.len() > SWEEP_AT {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        match self.limiter.check_key(&subject.to_owned()) {
            Ok(state) => {
                let quota = state.quota();
                let remaining = state.remaining_burst_capacity();
                // What is missing from the burst comes back one per interval: at most this long
                // (the interval in progress may be partly over).
                let used = quota.burst_size().get().saturating_sub(remaining);
                let reset = quota.replenish_interval().saturating_mul(used);
                Decision {
                    allowed: true,
                    remaining: u64::from(remaining),
                    reset_secs: whole_secs(reset),
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let quota = not_until.quota();
                // Refused: the bucket is empty, so the whole burst is that wait plus the rest.
                let reset = quota
                    .replenish_interval()
                    .saturating_mul(quota.burst_size().get() - 1)
                    .saturating_add(wait);
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_secs: whole_secs(reset),
                    retry_after_secs: whole_secs(wait).max(1),
                }
            }
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// Seconds, rounded up: a quota back in 200 µs is back in 1 s, not 0.
fn whole_secs(d: std::time::Duration) -> u64 {
    d.as_nanos()
        .div_ceil(1_000_000_000)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The local share of a limit: the quota over the instances (at least 1), in the same window.
fn local_quota(limit: PolicyLimit, instances: u32) -> (Quota, u64) {
    let share = (limit.quota / instances.max(1)).max(1);
    let period = limit.window / share;
    let burst = NonZeroU32::new(share).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst);
    (quota, u64::from(share))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limit(quota: u32, secs: u64) -> PolicyLimit {
        PolicyLimit {
            quota,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_local_share_is_the_quota_over_the_instances_at_least_one() {
        assert_eq!(local_quota(limit(300, 60), 3).1, 100);
        assert_eq!(local_quota(limit(10, 600), 1).1, 10);
        assert_eq!(local_quota(limit(2, 60), 3).1, 1);
        let (quota, _) = local_quota(limit(6, 60), 3);
        assert_eq!(quota.burst_size().get(), 2);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(30));
    }

    #[test]
    fn past_the_cap_new_keys_share_one_allowance_and_known_keys_keep_theirs() {
        // Two requests an hour per key, at most three keys.
        let local = Local::with_cap(limit(2, 3600), 1, 3);
        for key in ["a:1", "a:2", "a:3"] {
            assert!(local.check(key).allowed, "{key}");
        }
        assert_eq!(local.keys(), 3);

        // Two new keys past the cap take the overflow's two...
        assert!(local.check("a:4").allowed);
        assert!(local.check("a:5").allowed);
        // ...so the next new key is refused, though it never sent anything,
        let third_new = local.check("a:6");
        // while a known key still has its own second request.
        let known = local.check("a:1");

        assert!(!third_new.allowed);
        assert!(known.allowed, "a known key keeps its own allowance");
        // The map holds the cap and the overflow key, however many keys come.
        for i in 7..1_000 {
            local.check(&format!("a:{i}"));
        }
        assert_eq!(local.keys(), 4);
    }

    #[test]
    fn a_local_decision_reports_when_the_quota_is_whole_again() {
        let local = Local::new(limit(2, 60), 1);
        let first = local.check("a:1");
        assert!(first.allowed);
        assert_eq!(first.remaining, 1);
        assert_eq!(
            first.reset_secs, 30,
            "one request used: back in one interval"
        );
        local.check("a:1");
        let refused = local.check("a:1");
        assert!(!refused.allowed);
        assert!((30..=60).contains(&refused.reset_secs), "{refused:?}");

        // A large quota's interval is well under a second: still a reset of at least one.
        let busy = Local::new(limit(1_000_000, 60), 3);
        assert_eq!(busy.check("a:1").reset_secs, 1);
    }
}
