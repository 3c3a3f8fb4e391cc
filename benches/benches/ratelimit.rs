//! `palisade-ratelimit`'s pure decision over the fake host: a whole request
//! through the filter (admitted, and refused with a 429), and the table's
//! read-check-CAS step alone. Building the fake request is setup.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use palisade_benches::typical_request;
use palisade_core::fake::{FakeHost, SharedStore};
use palisade_core::{HttpFilter, Plugin};
use palisade_ratelimit::bucket::Rate;
use palisade_ratelimit::key::Key;
use palisade_ratelimit::table::{Outcome, Table, Want};
use palisade_ratelimit::RateLimitPlugin;
use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;

const NEVER: &str = r#"{"rules": [{"limits": [{"name": "ip", "key": ["client_ip"], "requests": 1000000000, "per_s": 1}]}]}"#;
const ALWAYS: &str = r#"{"rules": [{"limits": [{"name": "ip", "key": ["client_ip"], "requests": 1, "per_s": 86400}]}]}"#;

struct Setup {
    plugin: Rc<RateLimitPlugin>,
    shared: Rc<RefCell<SharedStore>>,
    metric_names: Vec<String>,
}

fn setup(config: &str) -> Setup {
    let mut root = FakeHost::new().at_secs(1_700_000_000);
    let plugin = match RateLimitPlugin::configure(config.as_bytes(), &mut root) {
        Ok(p) => Rc::new(p),
        Err(e) => panic!("bench config refused: {e}"),
    };
    Setup {
        plugin,
        shared: root.shared.clone(),
        metric_names: root.metric_names.clone(),
    }
}

fn request(s: &Setup) -> FakeHost {
    let mut h = typical_request().at_secs(1_700_000_000);
    h.shared = Rc::clone(&s.shared);
    h.metric_names = s.metric_names.clone();
    h.properties
        .insert("source.address".into(), b"203.0.113.7:51000".to_vec());
    h
}

fn exchange(plugin: &Rc<RateLimitPlugin>, host: &mut FakeHost) {
    let mut f = RateLimitPlugin::new_filter(plugin);
    if f.on_request_headers(host, true) == palisade_core::Flow::Continue {
        host.response_headers = vec![(":status".into(), b"200".to_vec())];
        f.on_response_headers(host, false);
    }
}

fn benches(c: &mut Criterion) {
    let open = setup(NEVER);
    let mut probe = request(&open);
    exchange(&open.plugin, &mut probe);
    assert!(probe.sent.is_none(), "the open limit refused");
    c.bench_function("ratelimit: admitted request (client_ip key)", |b| {
        b.iter_batched(
            || request(&open),
            |mut h| {
                exchange(&open.plugin, &mut h);
                black_box(h)
            },
            BatchSize::SmallInput,
        )
    });

    let closed = setup(ALWAYS);
    let mut first = request(&closed);
    exchange(&closed.plugin, &mut first);
    let mut probe = request(&closed);
    exchange(&closed.plugin, &mut probe);
    assert_eq!(probe.sent.as_ref().map(|s| s.status), Some(429));
    c.bench_function("ratelimit: refused request (429 problem+json)", |b| {
        b.iter_batched(
            || request(&closed),
            |mut h| {
                exchange(&closed.plugin, &mut h);
                black_box(h)
            },
            BatchSize::SmallInput,
        )
    });

    let table = Table::new(16_384, 8, "palisade.ratelimit.slot.".into());
    let mut host = FakeHost::new().at_secs(1_700_000_000);
    if table.create_slots(&mut host).is_err() {
        panic!("slots");
    }
    let want = Want {
        digest: Key::new("ip", vec![("client_ip".into(), "203.0.113.7".into())]).digest,
        rate: Rate::new(1_000_000_000, 1, 1_000_000_000),
    };
    let now = 1_700_000_000u64 * 1_000_000_000;
    c.bench_function("ratelimit: table admit (read, check, CAS write)", |b| {
        b.iter(|| {
            let o = table.admit(&mut host, black_box(&[want]), now);
            assert!(matches!(o, Outcome::Admitted { .. }));
        })
    });

    c.bench_function("ratelimit: key digest (header part hashed)", |b| {
        b.iter(|| {
            black_box(Key::new(
                "per-key",
                vec![(
                    "header.x-api-key".into(),
                    palisade_ratelimit::key::hash_value(black_box(b"k-0123456789abcdef")),
                )],
            ))
        })
    });
}

criterion_group!(ratelimit, benches);
criterion_main!(ratelimit);
