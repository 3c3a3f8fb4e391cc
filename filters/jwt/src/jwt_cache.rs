//! Verified tokens, so a repeated token costs a lookup, not a signature check.
//!
//! Per worker VM (sharing it through shared data would cost a host call and
//! a copy per lookup, about what the lookup saves). Bounded (oldest out
//! first), an entry never outlives its token's `exp`, and an entry made with
//! an older key set of its provider is ignored, so a key removed by rotation
//! stops its tokens at once. Only tokens that verified are stored: a flood
//! of forged tokens cannot grow or churn it.
//!
//! Looked up by a hash of the token and confirmed by comparing the whole
//! token, so a hash collision can never pass one token off as another.

use crate::verifier::Verified;
use rustc_hash::FxBuildHasher;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

#[derive(Debug)]
struct Entry {
    provider: usize,
    verified: Rc<Verified>,
    /// Unix seconds after which the entry is dead.
    until_s: u64,
    generation: u64,
    seq: u64,
}

/// Key: the token.
type Key = Box<[u8]>;

#[derive(Debug)]
pub struct TokenCache {
    map: HashMap<Key, Entry, FxBuildHasher>,
    order: VecDeque<(Key, u64)>,
    max: usize,
    seq: u64,
}

impl TokenCache {
    pub fn new(max: usize) -> TokenCache {
        TokenCache {
            map: HashMap::default(),
            order: VecDeque::new(),
            max,
            seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The verified token, if cached, alive at `now_s` and made with key set `generation`.
    pub fn get(
        &mut self,
        provider: usize,
        token: &[u8],
        now_s: u64,
        generation: u64,
    ) -> Option<Rc<Verified>> {
        let entry = self.map.get(token)?;
        if entry.provider != provider {
            return None;
        }
        if now_s >= entry.until_s || entry.generation != generation {
            self.map.remove(token);
            return None;
        }
        Some(entry.verified.clone())
    }

    /// Stores a token verified at `now_s`; alive until its `exp`.
    pub fn insert(
        &mut self,
        provider: usize,
        token: &[u8],
        verified: Rc<Verified>,
        now_s: u64,
        generation: u64,
    ) {
        if self.max == 0 || verified.exp <= now_s {
            return;
        }
        while self.map.len() >= self.max {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.seq == seq) {
                self.map.remove(&old);
            }
        }
        // Stale order entries (replaced or expired keys) are bounded too.
        if self.order.len() >= self.max.saturating_mul(2) {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|e| e.seq == *seq));
        }
        self.seq += 1;
        let key: Key = Box::from(token);
        self.order.push_back((key.clone(), self.seq));
        self.map.insert(
            key,
            Entry {
                provider,
                until_s: verified.exp,
                verified,
                generation,
                seq: self.seq,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(exp: u64) -> Rc<Verified> {
        Rc::new(Verified {
            claims: Default::default(),
            claims_json: Vec::new(),
            exp,
        })
    }

    #[test]
    fn bounded_never_past_exp_and_per_generation() {
        let mut c = TokenCache::new(2);
        c.insert(0, b"a", v(100), 10, 1);
        assert!(c.get(0, b"a", 99, 1).is_some());
        assert!(c.get(1, b"a", 99, 1).is_none(), "per provider");
        assert!(c.get(0, b"a", 99, 2).is_none(), "a new key set invalidates");
        c.insert(0, b"a", v(100), 10, 1);
        assert!(c.get(0, b"a", 100, 1).is_none(), "dead at exp");
        c.insert(0, b"x", v(100), 10, 1);
        c.insert(0, b"y", v(100), 10, 1);
        c.insert(0, b"z", v(100), 10, 1);
        assert_eq!(c.len(), 2);
        assert!(c.get(0, b"x", 11, 1).is_none(), "oldest out first");
        assert!(c.get(0, b"z", 11, 1).is_some());
        c.insert(0, b"old", v(5), 10, 1);
        assert!(
            c.get(0, b"old", 10, 1).is_none(),
            "expired tokens are not stored"
        );
        for i in 0..1000u32 {
            c.insert(0, &i.to_le_bytes(), v(100), 10, 1);
        }
        assert!(c.len() <= 2 && c.order.len() <= 4);
    }
}
