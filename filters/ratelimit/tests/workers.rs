//! Several worker VMs over one shared store: exactness under CAS races, and
//! the memory bound under key flooding.

mod common;

use common::{Worker, T0};
use palisade_core::fake::FakeHost;
use palisade_core::host::{Shared, SharedError};
use palisade_core::Host;
use palisade_ratelimit::bucket::Rate;
use palisade_ratelimit::key::Key;
use palisade_ratelimit::table::{Entered, Outcome, Store, Table, Want};

const S: u64 = 1_000_000_000;

/// Worker A's store; right before A's next write, worker B runs a whole
/// decision of its own: the worst interleaving for A.
struct Racing<'a> {
    me: &'a mut FakeHost,
    other: &'a mut FakeHost,
    table: &'a Table,
    wants: &'a [Want],
    now: u64,
    interrupts: u32,
    other_outcomes: Vec<Outcome>,
}

impl Store for Racing<'_> {
    fn get(&self, key: &str) -> Shared {
        self.me.shared_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        if self.interrupts > 0 {
            self.interrupts -= 1;
            let outcome = self.table.admit(self.other, self.wants, self.now);
            self.other_outcomes.push(outcome);
        }
        self.me.shared_set(key, value, cas)
    }
}

fn table(slots: u32, entries: u32) -> Table {
    Table::new(slots, entries, "palisade.ratelimit.slot.".into())
}

fn want(limit: &str, rate: Rate) -> Want {
    Want {
        digest: Key::new(limit, vec![("client_ip".into(), "192.0.2.1".into())]).digest,
        rate,
    }
}

fn admitted(o: &Outcome) -> bool {
    matches!(o, Outcome::Admitted { .. })
}

#[test]
fn two_workers_never_both_spend_the_last_token() {
    let t = table(8, 4);
    let mut a = FakeHost::new().at_secs(T0);
    let mut b = a.sibling();
    t.create_slots(&mut a).unwrap();
    let wants = [want("one", Rate::new(1, 60, 1))];
    let now = T0 * S;
    let mut racing = Racing {
        me: &mut a,
        other: &mut b,
        table: &t,
        wants: &wants,
        now,
        interrupts: 1,
        other_outcomes: Vec::new(),
    };
    let mine = t.admit(&mut racing, &wants, now);
    let theirs = racing.other_outcomes.clone();
    assert_eq!(theirs.len(), 1);
    // B wrote first and got the token; A's stale write failed its CAS,
    // A re-read and was refused.
    assert!(admitted(&theirs[0]), "{theirs:?}");
    assert!(matches!(mine, Outcome::Denied { .. }), "{mine:?}");
}

#[test]
fn interleaved_workers_admit_exactly_the_limit_across_rules_with_several_slots() {
    for n in [1u64, 2, 5, 17] {
        let t = table(4, 4);
        let mut a = FakeHost::new().at_secs(T0);
        let mut b = a.sibling();
        t.create_slots(&mut a).unwrap();
        // Two limits, likely in different slots: both must admit.
        let wants = [
            want("per-client", Rate::new(n, 3600, n)),
            want("everyone", Rate::new(1000, 3600, 1000)),
        ];
        let now = T0 * S;
        let mut total = 0;
        for _ in 0..n * 3 {
            let mut racing = Racing {
                me: &mut a,
                other: &mut b,
                table: &t,
                wants: &wants,
                now,
                interrupts: 1,
                other_outcomes: Vec::new(),
            };
            let mine = t.admit(&mut racing, &wants, now);
            total += racing.other_outcomes.iter().filter(|o| admitted(o)).count();
            total += usize::from(admitted(&mine));
        }
        assert_eq!(total as u64, n, "limit {n}");
    }
}

#[test]
fn two_configured_workers_share_one_count() {
    let cfg = r#"{"rules": [{"limits": [{"name": "l", "key": ["client_ip"], "requests": 7, "per_s": 3600}]}]}"#;
    let w1 = Worker::new(cfg);
    let w2 = w1.sibling(cfg);
    let mut ok = 0;
    for i in 0..20 {
        let w = if i % 2 == 0 { &w1 } else { &w2 };
        if w.status(w.request("GET", "/")) == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 7);
}

#[test]
fn a_key_flood_keeps_the_key_set_fixed_and_an_exhausted_client_limited() {
    let slots = 64;
    let t = table(slots, 4);
    let mut host = FakeHost::new().at_secs(T0);
    t.create_slots(&mut host).unwrap();
    let rate = Rate::new(5, 3600, 5);
    let now = T0 * S;
    let honest = want("k", rate);
    for _ in 0..5 {
        assert!(admitted(&t.admit(&mut host, &[honest], now)));
    }
    assert!(!admitted(&t.admit(&mut host, &[honest], now)));
    let mut evicted = 0u64;
    for i in 0..100_000u64 {
        let w = Want {
            digest: Key::new("k", vec![("header.x-api-key".into(), i.to_string())]).digest,
            rate,
        };
        match t.admit(&mut host, &[w], now + i) {
            Outcome::Admitted { evicted: e, .. } => evicted += u64::from(e),
            o => panic!("a fresh key was refused: {o:?}"),
        }
        if i % 10_000 == 0 {
            assert!(!admitted(&t.admit(&mut host, &[honest], now + i)));
        }
    }
    assert!(evicted > 90_000, "{evicted}");
    let store = host.shared.borrow();
    assert_eq!(store.len(), slots as usize);
    assert!(
        store.bytes() <= slots as usize * (40 + 4 * 16),
        "{}",
        store.bytes()
    );
    drop(store);
    // The exhausted client owes the most in its slot: never evicted.
    assert!(!admitted(&t.admit(&mut host, &[honest], now + 100_000)));
}

#[test]
fn idle_buckets_are_dropped_for_free() {
    let t = table(1, 2);
    let mut host = FakeHost::new().at_secs(T0);
    t.create_slots(&mut host).unwrap();
    let rate = Rate::new(1, 1, 1);
    let now = T0 * S;
    for i in 0..50u64 {
        let w = Want {
            digest: Key::new("k", vec![("n".into(), i.to_string())]).digest,
            rate,
        };
        // One new key per second: the previous one is full again by then.
        match t.admit(&mut host, &[w], now + i * S) {
            Outcome::Admitted { evicted, .. } => assert_eq!(evicted, 0),
            o => panic!("{o:?}"),
        }
    }
}

#[test]
fn a_host_without_shared_data_is_refused_at_configure_time() {
    let mut root = FakeHost::new();
    root.shared.borrow_mut().unavailable = true;
    let err = <palisade_ratelimit::RateLimitPlugin as palisade_core::Plugin>::configure(
        br#"{"rules": [{"limits": [{"name": "l", "key": [], "requests": 1, "per_s": 1}]}]}"#,
        &mut root,
    )
    .unwrap_err();
    assert_eq!(err.path, "mode");
    assert!(err.message.contains("shared data"), "{err}");
}

#[test]
fn slots_are_created_once_and_only_by_the_first_worker() {
    let t = table(16, 4);
    let mut a = FakeHost::new();
    let mut b = a.sibling();
    assert_eq!(t.create_slots(&mut a).unwrap(), 16);
    assert_eq!(t.create_slots(&mut b).unwrap(), 0);
}

/// Worker A's store; right before A's next `interrupts` writes, worker B
/// runs `other` (a whole decision of its own) on the same shared data.
struct Interleaved<'a> {
    me: &'a mut FakeHost,
    other: &'a mut FakeHost,
    interrupts: u32,
    run_other: &'a mut dyn FnMut(&mut FakeHost),
}

impl Store for Interleaved<'_> {
    fn get(&self, key: &str) -> Shared {
        self.me.shared_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        if self.interrupts > 0 {
            self.interrupts -= 1;
            (self.run_other)(self.other);
        }
        self.me.shared_set(key, value, cas)
    }
}

#[test]
fn a_refund_racing_another_keys_admission_loses_neither() {
    // One slot: both keys' buckets live in the same shared-data value.
    let t = table(1, 4);
    let mut a = FakeHost::new().at_secs(T0);
    let mut b = a.sibling();
    t.create_slots(&mut a).unwrap();
    let now = T0 * S;
    let rate = Rate::new(1, 3600, 1);
    let mine = want("mine", rate);
    let theirs = want("theirs", rate);
    assert!(admitted(&t.admit(&mut a, &[mine], now)));
    let mut outcomes = Vec::new();
    let mut other = |h: &mut FakeHost| outcomes.push(t.admit(h, &[theirs], now));
    let mut store = Interleaved {
        me: &mut a,
        other: &mut b,
        interrupts: 1,
        run_other: &mut other,
    };
    t.give_back(&mut store, &[mine], now);
    assert_eq!(outcomes.len(), 1);
    assert!(admitted(&outcomes[0]));
    // The refund retried on a fresh read: my token is back, theirs spent.
    assert!(admitted(&t.admit(&mut a, &[mine], now)));
    assert!(!admitted(&t.admit(&mut a, &[theirs], now)));
}

#[test]
fn racing_workers_never_hold_more_places_than_max_in_flight() {
    for max in [1u64, 2, 3] {
        let t = table(2, 4);
        let mut a = FakeHost::new().at_secs(T0);
        let mut b = a.sibling();
        t.create_slots(&mut a).unwrap();
        let digest = want("c", Rate::new(1, 1, 1)).digest;
        let mut held = 0;
        for _ in 0..max * 3 {
            let mut theirs = Vec::new();
            let mut other = |h: &mut FakeHost| theirs.push(t.enter(h, &digest, max));
            let mut store = Interleaved {
                me: &mut a,
                other: &mut b,
                interrupts: 1,
                run_other: &mut other,
            };
            let mine = t.enter(&mut store, &digest, max);
            held += usize::from(mine == Entered::Held);
            held += theirs.iter().filter(|e| **e == Entered::Held).count();
        }
        assert_eq!(held as u64, max);
        assert_eq!(t.in_flight(&a, &digest), max);
        // Releases racing admissions: every place comes back.
        for _ in 0..max {
            // B takes the place A is freeing, if it can, and frees it:
            // its writes make A's stale write fail and retry.
            let mut other = |h: &mut FakeHost| {
                if t.enter(h, &digest, max) == Entered::Held {
                    assert!(t.leave(h, &digest));
                }
            };
            let mut store = Interleaved {
                me: &mut a,
                other: &mut b,
                interrupts: 1,
                run_other: &mut other,
            };
            assert!(t.leave(&mut store, &digest));
        }
        assert_eq!(t.in_flight(&a, &digest), 0);
        assert!(!t.leave(&mut a, &digest), "nothing left to release");
    }
}
