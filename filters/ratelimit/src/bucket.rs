//! Token-bucket arithmetic, in integer nanoseconds.
//!
//! A bucket of `capacity` tokens refilled with `requests` tokens every
//! `per_s` seconds is kept as one number, its *theoretical arrival time*
//! (TAT, the generic cell rate algorithm): the instant at which the bucket
//! would be full again. Taking a token moves the TAT one emission interval
//! `T = per_s / requests` later; a request is admitted when the new TAT is
//! at most `capacity × T` ahead of now. One `u64` per key, no floats, and a
//! TAT in the past means exactly "full bucket", so such an entry carries no
//! information and can be dropped without changing any decision.
//!
//! `T` is rounded *up* to the nanosecond, so rounding can only make a limit
//! stricter, by at most one nanosecond per token.

use crate::config::LimitConfig;

const NANOS: u128 = 1_000_000_000;

/// A limit's rate in the units the arithmetic needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds one token takes to come back.
    pub interval_ns: u64,
    /// `capacity × interval`: how far ahead of now the TAT may run.
    pub tolerance_ns: u64,
    /// Tokens in a full bucket.
    pub capacity: u64,
    /// The policy as configured, for response headers.
    pub requests: u64,
    pub per_s: u64,
}

impl Rate {
    /// Validated config values keep every product far below `u64::MAX`
    /// (`per_s` ≤ a year, `requests` ≤ 10⁹); saturation guards the rest.
    pub fn new(requests: u64, per_s: u64, capacity: u64) -> Rate {
        let requests = requests.max(1);
        let capacity = capacity.max(1);
        let interval = (u128::from(per_s) * NANOS).div_ceil(u128::from(requests));
        let interval_ns = u64::try_from(interval).unwrap_or(u64::MAX).max(1);
        let tolerance_ns = interval_ns.saturating_mul(capacity);
        Rate {
            interval_ns,
            tolerance_ns,
            capacity,
            requests,
            per_s,
        }
    }

    /// The limit's rate; `None` for a limit with only `max_in_flight`.
    pub fn of(limit: &LimitConfig) -> Option<Rate> {
        let (requests, per_s) = limit.rate()?;
        Some(Rate::new(requests, per_s, limit.capacity()))
    }

    /// Takes one token from a bucket whose TAT is `tat` (0: never used).
    pub fn take(&self, tat: u64, now: u64) -> Verdict {
        let base = tat.max(now);
        let new_tat = base.saturating_add(self.interval_ns);
        let ahead = new_tat - now;
        if ahead <= self.tolerance_ns {
            let slack = self.tolerance_ns - ahead;
            let remaining = slack / self.interval_ns;
            Verdict::Admit {
                new_tat,
                remaining,
                next_token_ns: self.interval_ns - slack % self.interval_ns,
            }
        } else {
            Verdict::Deny {
                retry_after_ns: ahead - self.tolerance_ns,
            }
        }
    }

    /// Gives back one token taken by [`Rate::take`] (a later limit of the
    /// same rule refused the request). Never below "full".
    pub fn refund(&self, tat: u64, now: u64) -> u64 {
        let back = tat.saturating_sub(self.interval_ns);
        if back <= now {
            0
        } else {
            back
        }
    }

    /// Whether a bucket with this TAT is full (its entry may be dropped).
    pub fn is_full(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit {
        /// The TAT to store.
        new_tat: u64,
        /// Whole tokens left after this request.
        remaining: u64,
        /// Nanoseconds until one more token is back (the draft's `t`).
        next_token_ns: u64,
    },
    Deny {
        /// Nanoseconds until one token is back.
        retry_after_ns: u64,
    },
}

/// Whole seconds, rounded up, never 0 for a positive duration: `Retry-After: 0`
/// would invite an immediate retry that is still refused.
pub fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn admit(v: Verdict) -> (u64, u64) {
        match v {
            Verdict::Admit {
                new_tat, remaining, ..
            } => (new_tat, remaining),
            Verdict::Deny { .. } => panic!("denied: {v:?}"),
        }
    }

    #[test]
    fn a_full_bucket_admits_capacity_requests_then_denies() {
        let rate = Rate::new(5, 60, 5);
        let mut tat = 0;
        for left in (0..5).rev() {
            let (t, remaining) = admit(rate.take(tat, T0));
            assert_eq!(remaining, left);
            tat = t;
        }
        match rate.take(tat, T0) {
            Verdict::Deny { retry_after_ns, .. } => assert_eq!(retry_after_ns, 12 * S),
            v => panic!("admitted: {v:?}"),
        }
        assert_eq!(ceil_secs(12 * S), 12);
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let rate = Rate::new(5, 60, 5);
        let mut tat = 0;
        for _ in 0..5 {
            tat = admit(rate.take(tat, T0)).0;
        }
        assert!(matches!(
            rate.take(tat, T0 + 12 * S - 1),
            Verdict::Deny { .. }
        ));
        let (tat, remaining) = admit(rate.take(tat, T0 + 12 * S));
        assert_eq!(remaining, 0);
        assert!(matches!(rate.take(tat, T0 + 12 * S), Verdict::Deny { .. }));
    }

    #[test]
    fn burst_above_the_rate_allows_a_bigger_first_wave() {
        let rate = Rate::new(100, 1, 200);
        let mut tat = 0;
        for _ in 0..200 {
            tat = admit(rate.take(tat, T0)).0;
        }
        assert!(matches!(rate.take(tat, T0), Verdict::Deny { .. }));
        // 10 ms later one token is back (100 per second).
        admit(rate.take(tat, T0 + 10_000_000));
    }

    #[test]
    fn a_denied_request_leaves_the_state_alone_and_refund_restores_a_token() {
        let rate = Rate::new(2, 10, 2);
        let tat1 = admit(rate.take(0, T0)).0;
        let tat2 = admit(rate.take(tat1, T0)).0;
        assert!(matches!(rate.take(tat2, T0), Verdict::Deny { .. }));
        assert_eq!(rate.refund(tat2, T0), tat1);
        assert_eq!(rate.refund(tat1, T0), 0);
    }

    #[test]
    fn an_idle_bucket_is_full_and_its_entry_carries_nothing() {
        let rate = Rate::new(3, 3, 3);
        let tat = admit(rate.take(0, T0)).0;
        assert!(!Rate::is_full(tat, T0));
        assert!(Rate::is_full(tat, T0 + S));
        assert_eq!(rate.take(tat, T0 + S), rate.take(0, T0 + S));
    }

    #[test]
    fn fractional_intervals_round_towards_strictness() {
        // 3 per second: 333_333_333.33 ns, rounded up.
        let rate = Rate::new(3, 1, 3);
        assert_eq!(rate.interval_ns, 333_333_334);
        let mut tat = 0;
        let mut admitted = 0;
        for i in 0..30 {
            if let Verdict::Admit { new_tat, .. } = rate.take(tat, T0 + i * (S / 10)) {
                tat = new_tat;
                admitted += 1;
            }
        }
        // 3 at once, then one per 1/3 s over 2.9 s: never more than 3 + 8.
        assert!(admitted <= 11, "{admitted}");
        assert!(admitted >= 10, "{admitted}");
    }

    #[test]
    fn extreme_values_saturate_instead_of_overflowing() {
        let rate = Rate::new(1, crate::config::MAX_PER_S, crate::config::MAX_REQUESTS);
        let v = rate.take(u64::MAX, u64::MAX - 1);
        assert!(matches!(v, Verdict::Deny { .. } | Verdict::Admit { .. }));
        let rate = Rate::new(crate::config::MAX_REQUESTS, 1, 1);
        admit(rate.take(0, 0));
    }
}
