//! Local mode's bucket table: a fixed number of shared-data slots, updated
//! with compare-and-swap so every worker of one proxy spends from the same
//! buckets.
//!
//! ## Why slots
//! Envoy's shared data never deletes a key, so one key per client would grow
//! without bound under a flood of distinct clients. Instead a key's digest
//! picks one of `slots` shared-data keys (`slot.<n>`, all created at startup);
//! a slot holds up to `entries_per_slot` buckets of 16 bytes (a 64-bit
//! fingerprint and the bucket's TAT, see [`crate::bucket`]). Memory is fixed:
//! `slots × (key + entries_per_slot × 16 bytes)` whatever the traffic.
//!
//! ## Eviction, and which way it errs
//! A bucket whose TAT has passed is full: its entry carries no information
//! and is dropped for free. Only when a slot is full of buckets that are
//! still refilling does a new key evict one: the entry closest to full (the
//! smallest TAT), i.e. the client that owes the least. Eviction therefore
//! errs on the lenient side and only for that one client, by at most its
//! remaining debt; it never makes one client pay for another. Fingerprints
//! are 64 bits, so two live keys sharing a bucket by accident (which would
//! err on the strict side) is a 2⁻⁶⁴ event. An honest client that has used
//! its limit owes the most in its slot and is the last to be evicted: a flood
//! of one-request keys cannot reset it.
//!
//! ## Exactness
//! All limits of a rule are read, checked, and only then written, each slot
//! write carrying the CAS version of its read. A write that loses a race is
//! retried from the read, so two workers never both spend the last token.
//! When a rule has limits in several slots and a later slot's write loses,
//! the earlier writes are refunded before the retry: in that short window a
//! concurrent request may see one token fewer (stricter), never more.
//!
//! ## Refunds
//! A limit with `count` reserves its token at the request and gives it back
//! ([`Table::give_back`]) when the response is not one it counts: the same
//! CAS path as the refund above, so reservations stay exact under races.
//!
//! ## Requests in flight
//! A table under its own prefix (`flight.<n>`) keeps, per key, how many
//! requests are in flight instead of a TAT ([`Table::enter`],
//! [`Table::leave`]). An entry at 0 is dropped. A slot full of live counts
//! refuses a new key rather than forget a live count, which would let that
//! key exceed its limit.

use crate::bucket::{Rate, Verdict};
use palisade_core::host::{Shared, SharedError};
use palisade_core::Host;

/// Reads and CAS writes of shared data; implemented by every [`Host`], and
/// by test doubles that interleave workers.
pub trait Store {
    fn get(&self, key: &str) -> Shared;
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError>;
}

impl<H: Host + ?Sized> Store for H {
    fn get(&self, key: &str) -> Shared {
        self.shared_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        self.shared_set(key, value, cas)
    }
}

/// Attempts before a request that keeps losing CAS races is refused
/// (refusing keeps the guarantee; two workers practically never get here).
pub const MAX_ATTEMPTS: u32 = 32;

const ENTRY: usize = 16;

/// The table's shape, fixed at configure time.
#[derive(Debug, Clone)]
pub struct Table {
    slots: u32,
    entries_per_slot: usize,
    /// `shared_key("ratelimit", "slot.")` for this host.
    prefix: String,
}

/// One bucket a request must take a token from.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub digest: [u8; 32],
    pub rate: Rate,
}

/// What the table decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every bucket gave a token; per bucket `(remaining, next_token_ns)`.
    Admitted {
        state: Vec<(u64, u64)>,
        evicted: u32,
    },
    /// Bucket `index` had no token; nothing was spent.
    Denied { index: usize, retry_after_ns: u64 },
    /// The races were never won in [`MAX_ATTEMPTS`].
    Contended,
    /// The host has no usable shared data.
    Unavailable,
}

/// What [`Table::enter`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// Counted: the request holds a place until [`Table::leave`].
    Held,
    /// `max` requests of this key are in flight; nothing was counted.
    AtLimit,
    /// The key's slot is full of other keys' live counts; nothing was counted.
    SlotFull,
    /// The races were never won in [`MAX_ATTEMPTS`]; nothing was counted.
    Contended,
    /// The host has no usable shared data.
    Unavailable,
}

/// A slot's decoded entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    fingerprint: u64,
    /// The bucket's TAT; in an in-flight table, the count.
    tat: u64,
}

impl Table {
    pub fn new(slots: u32, entries_per_slot: u32, prefix: String) -> Table {
        Table {
            slots: slots.max(1),
            entries_per_slot: entries_per_slot.max(1) as usize,
            prefix,
        }
    }

    pub fn slot_key(&self, n: u32) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Which slot, and the fingerprint stored there.
    pub fn locate(&self, digest: &[u8; 32]) -> (u32, u64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&digest[..8]);
        b.copy_from_slice(&digest[8..16]);
        let slot = (u64::from_le_bytes(a) % u64::from(self.slots)) as u32;
        (slot, u64::from_le_bytes(b))
    }

    /// Creates every slot that does not exist yet. Envoy ignores the CAS
    /// version when a key is missing, so two workers creating the same slot
    /// at once could both "win": creating them all before traffic (at
    /// configure time) leaves only CAS-checked updates for the request path.
    /// Returns how many were created, `Err` when the host has no store.
    pub fn create_slots<S: Store + ?Sized>(&self, store: &mut S) -> Result<u32, SharedError> {
        let mut created = 0;
        for n in 0..self.slots {
            let key = self.slot_key(n);
            if store.get(&key).value.is_none() {
                store.set(&key, b"", None)?;
                created += 1;
            }
        }
        Ok(created)
    }

    /// Takes one token from every wanted bucket, or from none.
    pub fn admit<S: Store + ?Sized>(&self, store: &mut S, wants: &[Want], now: u64) -> Outcome {
        let located: Vec<(u32, u64)> = wants.iter().map(|w| self.locate(&w.digest)).collect();
        // Distinct slots in first-use order: limits sharing a slot are
        // applied to one read and written once.
        let mut slots: Vec<u32> = Vec::new();
        for (slot, _) in &located {
            if !slots.contains(slot) {
                slots.push(*slot);
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let mut reads: Vec<(Vec<Entry>, Option<u32>)> = slots
                .iter()
                .map(|s| {
                    let Shared { value, cas } = store.get(&self.slot_key(*s));
                    (decode(value.as_deref().unwrap_or_default()), cas)
                })
                .collect();
            let mut state = Vec::with_capacity(wants.len());
            let mut evicted = 0;
            for (i, (want, (slot, fp))) in wants.iter().zip(&located).enumerate() {
                let at = slots.iter().position(|s| s == slot).unwrap_or(0);
                let entries = &mut reads[at].0;
                let tat = find(entries, *fp, now);
                match want.rate.take(tat, now) {
                    Verdict::Deny { retry_after_ns } => {
                        return Outcome::Denied {
                            index: i,
                            retry_after_ns,
                        }
                    }
                    Verdict::Admit {
                        new_tat,
                        remaining,
                        next_token_ns,
                    } => {
                        if upsert(entries, *fp, new_tat, now, self.entries_per_slot) {
                            evicted += 1;
                        }
                        state.push((remaining, next_token_ns));
                    }
                }
            }
            match self.commit(store, &slots, &reads) {
                Ok(()) => return Outcome::Admitted { state, evicted },
                Err((written, SharedError::CasMismatch)) => {
                    self.refund(store, &slots[..written], wants, &located, now);
                }
                Err((written, SharedError::Unavailable)) => {
                    self.refund(store, &slots[..written], wants, &located, now);
                    return Outcome::Unavailable;
                }
            }
        }
        Outcome::Contended
    }

    /// Gives one token back to every bucket of `wants` (a reserved token
    /// whose response was not counted, or a stream that ended without one).
    pub fn give_back<S: Store + ?Sized>(&self, store: &mut S, wants: &[Want], now: u64) {
        let located: Vec<(u32, u64)> = wants.iter().map(|w| self.locate(&w.digest)).collect();
        let mut slots: Vec<u32> = Vec::new();
        for (slot, _) in &located {
            if !slots.contains(slot) {
                slots.push(*slot);
            }
        }
        self.refund(store, &slots, wants, &located, now);
    }

    /// One more request of `digest` in flight, unless `max` already are.
    pub fn enter<S: Store + ?Sized>(&self, store: &mut S, digest: &[u8; 32], max: u64) -> Entered {
        let (slot, fp) = self.locate(digest);
        let key = self.slot_key(slot);
        for _ in 0..MAX_ATTEMPTS {
            let Shared { value, cas } = store.get(&key);
            let mut entries = decode(value.as_deref().unwrap_or_default());
            entries.retain(|e| e.tat > 0);
            let full = entries.len() >= self.entries_per_slot;
            match entries.iter_mut().find(|e| e.fingerprint == fp) {
                Some(e) if e.tat >= max => return Entered::AtLimit,
                Some(e) => e.tat += 1,
                None if full => return Entered::SlotFull,
                None => entries.push(Entry {
                    fingerprint: fp,
                    tat: 1,
                }),
            }
            match store.set(&key, &encode(&entries), cas) {
                Ok(()) => return Entered::Held,
                Err(SharedError::CasMismatch) => continue,
                Err(SharedError::Unavailable) => return Entered::Unavailable,
            }
        }
        Entered::Contended
    }

    /// One request of `digest` fewer in flight; `false` when none was
    /// counted (the store lost it) or every attempt lost its race.
    pub fn leave<S: Store + ?Sized>(&self, store: &mut S, digest: &[u8; 32]) -> bool {
        let (slot, fp) = self.locate(digest);
        let key = self.slot_key(slot);
        // A lost release holds a place until the proxy restarts: try harder
        // than an admission, which may simply be refused.
        for _ in 0..MAX_ATTEMPTS * 4 {
            let Shared { value, cas } = store.get(&key);
            let mut entries = decode(value.as_deref().unwrap_or_default());
            let Some(e) = entries
                .iter_mut()
                .find(|e| e.fingerprint == fp && e.tat > 0)
            else {
                return false;
            };
            e.tat -= 1;
            entries.retain(|e| e.tat > 0);
            match store.set(&key, &encode(&entries), cas) {
                Ok(()) => return true,
                Err(SharedError::CasMismatch) => continue,
                Err(SharedError::Unavailable) => return false,
            }
        }
        false
    }

    /// Requests of `digest` in flight now (tests, diagnostics).
    pub fn in_flight<S: Store + ?Sized>(&self, store: &S, digest: &[u8; 32]) -> u64 {
        let (slot, fp) = self.locate(digest);
        let Shared { value, .. } = store.get(&self.slot_key(slot));
        decode(value.as_deref().unwrap_or_default())
            .iter()
            .find(|e| e.fingerprint == fp)
            .map_or(0, |e| e.tat)
    }

    /// Writes the slots in order; on failure, how many were written.
    fn commit<S: Store + ?Sized>(
        &self,
        store: &mut S,
        slots: &[u32],
        reads: &[(Vec<Entry>, Option<u32>)],
    ) -> Result<(), (usize, SharedError)> {
        for (i, (slot, (entries, cas))) in slots.iter().zip(reads).enumerate() {
            store
                .set(&self.slot_key(*slot), &encode(entries), *cas)
                .map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// Gives back the tokens taken in `written` slots (a later slot lost).
    fn refund<S: Store + ?Sized>(
        &self,
        store: &mut S,
        written: &[u32],
        wants: &[Want],
        located: &[(u32, u64)],
        now: u64,
    ) {
        for slot in written {
            let key = self.slot_key(*slot);
            for _ in 0..MAX_ATTEMPTS {
                let Shared { value, cas } = store.get(&key);
                let mut entries = decode(value.as_deref().unwrap_or_default());
                for (want, (s, fp)) in wants.iter().zip(located) {
                    if s == slot {
                        if let Some(e) = entries.iter_mut().find(|e| e.fingerprint == *fp) {
                            e.tat = want.rate.refund(e.tat, now);
                        }
                    }
                }
                entries.retain(|e| !Rate::is_full(e.tat, now));
                match store.set(&key, &encode(&entries), cas) {
                    Err(SharedError::CasMismatch) => continue,
                    _ => break,
                }
            }
        }
    }
}

/// The bucket's TAT, 0 (full) when absent.
fn find(entries: &[Entry], fingerprint: u64, now: u64) -> u64 {
    entries
        .iter()
        .find(|e| e.fingerprint == fingerprint)
        .map(|e| e.tat)
        .filter(|tat| !Rate::is_full(*tat, now))
        .unwrap_or(0)
}

/// Stores a bucket's new TAT; `true` if a refilling bucket had to go.
fn upsert(entries: &mut Vec<Entry>, fingerprint: u64, tat: u64, now: u64, cap: usize) -> bool {
    if let Some(e) = entries.iter_mut().find(|e| e.fingerprint == fingerprint) {
        e.tat = tat;
        return false;
    }
    entries.retain(|e| !Rate::is_full(e.tat, now));
    let entry = Entry { fingerprint, tat };
    if entries.len() < cap {
        entries.push(entry);
        return false;
    }
    // The client closest to a full bucket owes the least: forgetting it
    // forgives the least.
    if let Some(victim) = entries.iter_mut().min_by_key(|e| e.tat) {
        *victim = entry;
    }
    true
}

fn decode(raw: &[u8]) -> Vec<Entry> {
    raw.chunks_exact(ENTRY)
        .map(|c| {
            let mut fp = [0u8; 8];
            let mut tat = [0u8; 8];
            fp.copy_from_slice(&c[..8]);
            tat.copy_from_slice(&c[8..]);
            Entry {
                fingerprint: u64::from_le_bytes(fp),
                tat: u64::from_le_bytes(tat),
            }
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for e in entries {
        out.extend_from_slice(&e.fingerprint.to_le_bytes());
        out.extend_from_slice(&e.tat.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_truncated_to_whole_entries() {
        let e = vec![
            Entry {
                fingerprint: 1,
                tat: 2,
            },
            Entry {
                fingerprint: u64::MAX,
                tat: 9,
            },
        ];
        assert_eq!(decode(&encode(&e)), e);
        let mut raw = encode(&e);
        raw.push(7);
        assert_eq!(decode(&raw), e);
        assert!(decode(b"short").is_empty());
    }

    #[test]
    fn upsert_drops_full_buckets_for_free_then_evicts_the_smallest_debt() {
        let now = 100;
        let mut entries = vec![
            Entry {
                fingerprint: 1,
                tat: 50,
            },
            Entry {
                fingerprint: 2,
                tat: 300,
            },
        ];
        assert!(!upsert(&mut entries, 3, 200, now, 2));
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.fingerprint != 1));
        assert!(upsert(&mut entries, 4, 150, now, 2));
        assert!(entries.iter().any(|e| e.fingerprint == 2));
        assert!(entries.iter().any(|e| e.fingerprint == 4));
        assert!(!upsert(&mut entries, 2, 400, now, 2));
    }
}
